"""serve replicas on one bucket (moto's S3 on loopback): each delivery stored once whichever
replica received it, each unit exported by one replica, which claims it; a replica killed
with its claims held: the claims expire and another replica takes the items over."""

from __future__ import annotations

import json
import os
from pathlib import Path

from exporter.standin import StandinConfig, standin_in_thread
from tests.helpers import ACCOUNT, TOKEN, cli_env
from tests.s3fakes import store_env
from tests.s3helpers import body, keys, manifest_records
from tests.test_serve import APP, delivered
from tests.webhooks import Serve, Signer, wait_until


def replica(base_url: str, endpoint: str, bucket: str, signer: Signer, *extra: str) -> Serve:
    env = cli_env(base_url, **store_env(endpoint))
    args = ["--out", f"s3://{bucket}/arch", "--webhook-public-key", str(signer.pem), *extra]
    return Serve(args, env)


def exported(endpoint: str, bucket: str) -> list[dict[str, object]]:
    return [r for r in manifest_records(endpoint, bucket) if r["status"] == "exported"]


def test_three_replicas_on_one_bucket_export_each_unit_once(
    moto_server: str, bucket: str, tmp_path: Path
) -> None:
    signer = Signer(tmp_path)
    sids = [f"s-rep-{i:02d}" for i in range(30)]
    with standin_in_thread(StandinConfig(token=TOKEN, account_id=ACCOUNT)) as srv:
        bodies = [delivered(srv, sid) for sid in sids]
        # the third replica's claims outlive it only briefly: it is killed with items held
        hang = delivered(srv, "s-rep-hang", hang=30)
        reps = [replica(srv.base_url, moto_server, bucket, signer) for _ in range(3)]
        try:
            for r in reps:
                r.wait_ready(30)
            victim = reps[2]
            assert victim.deliver(hang, signer.headers(hang, "d-hang")) == 200
            for i, raw in enumerate(bodies):
                headers = signer.headers(raw, f"d-rep-{i}")
                assert reps[i % 3].deliver(raw, headers) == 200
                # the same delivery to another replica: stored once
                assert reps[(i + 1) % 3].deliver(raw, headers) == 200
            wait_until(
                lambda: len(exported(moto_server, bucket)) >= len(sids),
                timeout=60,
                what="every delivered unit exported",
            )
            victim.kill()
            assert reps[0].stop() == 143 and reps[1].stop() == 143
        finally:
            for r in reps:
                r.close()
        lines = exported(moto_server, bucket)
        by_session = {}
        for line in lines:
            by_session.setdefault(line["session_id"], []).append(line)
        for i, sid in enumerate(sids):
            assert len(by_session[sid]) == 1, by_session[sid]
            assert by_session[sid][0]["delivery_id"] == f"d-rep-{i}"
            assert body(moto_server, bucket, f"arch/{APP}/{sid}.csv") == srv.expected_body(APP, sid)
        # the killed replica's item stays in the inbox, claimed: a new replica takes it over
        # once the claim's lease runs out
        left = [
            k for k in keys(moto_server, bucket, "arch/.rtk-export-inbox/") if k.count("/") == 2
        ]
        assert [os.path.basename(k) for k in left] == ["d-hang.json"]
        claim = json.loads(body(moto_server, bucket, "arch/.rtk-export-inbox/claims/d-hang.json"))
        assert claim["pid"] == victim.proc.pid
