"""`accord demo` as a new user runs it: a real process, real ports, the printed credentials work."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.servers import free_port


def test_demo_starts_prints_working_credentials_and_serves(tmp_path: Path) -> None:
    port, upstream_port, gateway_port = free_port(), free_port(), free_port()
    log_path = tmp_path / "demo.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")}
    env["COLUMNS"] = "250"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "accord.cli", "demo", "--port", str(port), "--upstream-port", str(upstream_port),
             "--gateway-port", str(gateway_port), "--database", f"sqlite:///{tmp_path}/demo.db"],
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 90
        while "Press Ctrl+C" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "demo did not start in 90 s:\n" + log_path.read_text()
            time.sleep(0.2)
        output = log_path.read_text()
        token = re.search(r"acc_admin_[A-Za-z0-9]+", output).group(0)
        sandbox_keys = set(re.findall(r"acc_test_[A-Za-z0-9]+", output))
        live_keys = set(re.findall(r"acc_live_[A-Za-z0-9]+", output))
        assert len(sandbox_keys) == 3 and len(live_keys) == 1, output
        assert f"127.0.0.1:{gateway_port}" in output

        base = f"http://127.0.0.1:{port}"
        admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})
        partners = admin.get("/admin/api/partners").json()
        partners_by_slug = {p["slug"]: p["id"] for p in partners["items"]}
        assert set(partners_by_slug) == {"acme-analytics", "bright-agency", "dana-dev",
                                                          "internal-mobile"}
        products = {p["slug"]: p for p in admin.get("/admin/api/products").json()["items"]}
        trial = next(p for p in admin.get(f"/admin/api/products/{products['social']['id']}/plans").json()["items"]
                     if p["slug"] == "trial")
        assert trial["allowed_http_methods"] == ["GET"] and trial["is_default"] is True
        assert [(lim["metric"], lim["period"], lim["value"]) for lim in trial["limits"]] == [("hits", "month", 100)]

        login = httpx.post(f"{base}/api/auth/login", json={"email": "alice@acme.example", "password": "demo-password"})
        assert login.status_code == 200, login.text
        me = httpx.get(f"{base}/api/me", headers={"Authorization": f"Bearer {login.json()['token']}"}).json()
        assert [m["partner_slug"] for m in me["memberships"]] == [
            "acme-analytics"]

        users = httpx.get(f"http://127.0.0.1:{upstream_port}/social/users").json()
        assert users["items"][0]["handle"] == "ada"

        # The curl lines the banner prints work against the running gateway.
        dana = re.search(r"Bearer (acc_test_[A-Za-z0-9]+)' http://127.0.0.1:\d+/sandbox/social/users", output).group(1)
        gateway = f"http://127.0.0.1:{gateway_port}"
        through = httpx.get(f"{gateway}/sandbox/social/users", headers={"Authorization": f"Bearer {dana}"})
        assert through.status_code == 200 and through.json()["items"][0]["handle"] == "ada"
        assert through.headers["ratelimit"].startswith('"hits-month";r=99;')
        write = httpx.post(f"{gateway}/sandbox/social/posts", headers={"Authorization": f"Bearer {dana}"}, json={})
        assert write.status_code == 403 and write.json()["type"] == "/problems/http-method-disabled"

        # The onboarding path: Bright waits for production access; Acme goes live with its first production call.
        queue = admin.get("/admin/api/production-access-requests").json()["items"]
        assert [(r["partner_id"], r["state"]) for r in queue] == [(partners_by_slug["bright-agency"], "pending")]
        acme_live_key = live_keys.pop()
        live_call = httpx.get(f"{gateway}/social/users", headers={"Authorization": f"Bearer {acme_live_key}"})
        assert live_call.status_code == 200, live_call.text
        stage = ""
        while stage != "live":
            assert time.monotonic() < deadline + 30, f"acme is still at {stage!r}"
            time.sleep(0.3)
            stage = admin.get(f"/admin/api/partners/{partners_by_slug['acme-analytics']}/onboarding").json()["stage_key"]
        funnel = {s["key"]: s for s in admin.get("/admin/api/funnel").json()["stages"]}
        assert funnel["live"]["current"] == 1 and funnel["production_requested"]["current"] == 1
    finally:
        process.terminate()
        process.wait(timeout=20)
