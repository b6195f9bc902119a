"""Reading program files: YAML, `${VAR:-default}` interpolation, OpenAPI files, validation.

`load_document(path)` gives the file as plain data (what `accord export` must
reproduce); `validate_document(data)` turns it into a `ProgramSpec`, or raises
`ProgramError` naming every offending path (`products[0].plans[1].limits[0].metric`).

Interpolation happens in string values after YAML parsing, so a variable's value
can never change the file's structure:

* `${VAR}` is the variable's value; an unset variable is an error;
* `${VAR:-default}` is the default when VAR is unset or empty;
* `${VAR-default}` is the default only when VAR is unset;
* `$${` is a literal `${` (what `accord export` writes for one).
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from accord.program.errors import ProgramError, join_path
from accord.program.spec import ProgramSpec

_REFERENCE = re.compile(r"\$\$(?=\{)|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")
_OPENAPI_FILE_SUFFIXES = (".yaml", ".yml", ".json")


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""


def _construct_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark, f"found the key {key!r} twice", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_problem(exc: yaml.YAMLError) -> tuple[str, str]:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    reason = " ".join(str(part) for part in (getattr(exc, "context", None), getattr(exc, "problem", None)) if part)
    return where, f"not valid YAML: {reason or exc}"


def interpolate(value: Any, path: str = "", environ: Mapping[str, str] | None = None) -> Any:
    """`value` with `${…}` references replaced in every string (keys are left alone)."""
    environ = os.environ if environ is None else environ
    problems: list[tuple[str, str]] = []

    def walk(item: Any, where: str) -> Any:
        if isinstance(item, str):
            return _substitute(item, where, environ, problems)
        if isinstance(item, dict):
            return {k: walk(v, join_path(where, str(k))) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(item)]
        return item

    result = walk(value, path)
    if problems:
        raise ProgramError(problems)
    return result


def _substitute(text: str, where: str, environ: Mapping[str, str], problems: list[tuple[str, str]]) -> str:
    if "\x00" in text:
        # No database column can hold it (PostgreSQL refuses it outright).
        problems.append((where, "contains a NUL character"))
        return text
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, default = match.group(1), match.group(2), match.group(3)
        value = environ.get(name)
        if operator == ":-" and not value:
            return default
        if operator == "-" and value is None:
            return default
        if value is None:
            problems.append((where, f"environment variable {name} is not set (write ${{{name}:-default}} "
                                    "to give a default)"))
            return ""
        return value

    return _REFERENCE.sub(replace, text) if "$" in text else text


def escape(text: str) -> str:
    """The inverse of interpolation for literal text: `${` → `$${`."""
    return text.replace("${", "$${")


def _inline_openapi_files(data: dict[str, Any], base_dir: Path) -> None:
    """Replace `openapi: path/to/file.yaml` by the document it names (relative to the program file)."""
    apis = data.get("apis")
    if not isinstance(apis, list):
        return
    problems = []
    for index, api in enumerate(apis):
        if not isinstance(api, dict):
            continue
        ref = api.get("openapi")
        if not isinstance(ref, str) or "\n" in ref or not ref.strip().lower().endswith(_OPENAPI_FILE_SUFFIXES):
            continue
        where = f"apis[{index}].openapi"
        path = (base_dir / ref.strip()).resolve()
        try:
            api["openapi"] = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)
        except OSError as exc:
            problems.append((where, f"cannot read {path}: {exc.strerror or exc}"))
        except yaml.YAMLError as exc:
            line, reason = _yaml_problem(exc)
            problems.append((where, f"{path}{', ' + line if line else ''}: {reason}"))
    if problems:
        raise ProgramError(problems)


def parse_document(text: str, *, base_dir: Path | str = ".", source: str | None = None,
                   environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The program file's data: parsed, interpolated, with OpenAPI files read in."""
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ProgramError([_yaml_problem(exc)], source) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProgramError([("", "a program file is a mapping with tiers, custom_fields, apis, products "
                                 "and partners")], source)
    try:
        data = interpolate(data, environ=environ)
        _inline_openapi_files(data, Path(base_dir))
    except ProgramError as exc:
        raise exc.with_source(source) from None
    return data


def load_document(path: Path | str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read a program file (see the module docstring); raises ProgramError naming the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProgramError([("", f"cannot read the file: {exc.strerror or exc}")], str(path)) from exc
    return parse_document(text, base_dir=path.parent, source=str(path), environ=environ)


def format_location(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        path = join_path(path, f"[{part}]" if isinstance(part, int) else str(part))
    return path


def validate_document(data: dict[str, Any] | ProgramSpec, source: str | None = None) -> ProgramSpec:
    """The file's data as a ProgramSpec, or a ProgramError listing every invalid field by path."""
    if isinstance(data, ProgramSpec):
        return data
    try:
        return ProgramSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            reason = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                reason = "unknown field"
            elif error["type"] == "missing":
                reason = "is required"
            problems.append((format_location(error["loc"]), reason))
        raise ProgramError(problems, source) from None
