"""Config as code: `accord apply`, `accord export` and `accord partners import`.

* `document` loads a program file (YAML with `${VAR:-default}` interpolation) and
  validates it against `spec`, the Pydantic model of the whole file;
* `apply` makes the database match the file through the domain services, in the
  caller's single transaction: `checks` first verifies every cross-reference, then
  `apply_catalog`, `apply_products` and `apply_partners` create, update and (with
  --prune) remove, recording each step as a `changes.Change` (the diff shown);
* `export` writes the database back out in the same format;
* `importer` loads existing partners and their API keys from CSV or YAML;
* `commands` runs these for `accord.cli` (transaction, output, exit code).
"""
