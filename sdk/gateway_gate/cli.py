"""``gateway-gate``: the gate SDK's command line, for vendors and testers (docs/offline.md §8).

    gateway-gate [--state DIR] provision --url URL --gate-id ID --secret S --scene SCENE
                                         --trust-anchor FILE
    gateway-gate [--state DIR] sync
    gateway-gate [--state DIR] verify CODE...          ("-": one code per line from stdin)
    gateway-gate [--state DIR] tap CARD_NO --region CQ --mac MAC [--request-id ID --scanned-at T]
    gateway-gate [--state DIR] upload [--batch N]
    gateway-gate [--state DIR] status

Every answer is one JSON object per line on stdout. Exit status: 0 done (a scan was judged,
allow or deny); 1 the gate refused (no list, a list past its max age - fail closed -, a
document that does not verify, not provisioned); 2 bad usage (argparse); 3 the gateway could
not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .errors import GateError, Offline
from .gate import Gate


def _print(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, sort_keys=True) + "\n")
    sys.stdout.flush()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gateway-gate", description=(
        "The gate SDK of the 渝快码 ⇄ 电子社保卡 gateway: sync the signed lists, verify codes and "
        "card taps offline, journal every scan, upload the journal (docs/offline.md)."))
    p.add_argument("--state", default=os.environ.get("GATEWAY_GATE_STATE", "gate-state"),
                   help="the gate's state directory (GATEWAY_GATE_STATE; default ./gate-state)")
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("provision", help="set up credentials and pin the trust-list key")
    pr.add_argument("--url", required=True, help="the gateway's base URL")
    pr.add_argument("--gate-id", required=True, help="the gate's OAuth client id")
    pr.add_argument("--secret", default=os.environ.get("GATEWAY_GATE_SECRET"),
                    help="the gate's client secret (or GATEWAY_GATE_SECRET)")
    pr.add_argument("--scene", required=True, help="the gate's scene, e.g. metro")
    pr.add_argument("--trust-anchor", required=True,
                    help="file with the trust-list key's public JWK (`gateway keys "
                         "trust-anchor`), carried to the gate out of band")
    sub.add_parser("sync", help="fetch and verify the trust list and the card deny-list")
    v = sub.add_parser("verify", help="verify codes offline (- reads codes from stdin)")
    v.add_argument("codes", nargs="+")
    t = sub.add_parser("tap", help="judge a physical-card tap offline")
    t.add_argument("card_no")
    t.add_argument("--region", required=True)
    t.add_argument("--mac", required=True, help="the terminal's PSAM attestation")
    t.add_argument("--request-id", help="the request id the PSAM signed over")
    t.add_argument("--scanned-at", help="the scan time the PSAM signed over (RFC 3339)")
    u = sub.add_parser("upload", help="upload the journal from where it stopped")
    u.add_argument("--batch", type=int, default=500)
    sub.add_parser("status", help="what the gate holds and how fresh it is")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "provision":
            if not args.secret:
                raise GateError("not_provisioned", "--secret (or GATEWAY_GATE_SECRET) is needed")
            try:
                jwk = json.loads(Path(args.trust_anchor).read_text("utf-8"))
            except (OSError, ValueError) as exc:
                raise GateError("not_provisioned",
                                f"cannot read the trust anchor: {type(exc).__name__}") from None
            try:
                Gate.provision(args.state, base_url=args.url, client_id=args.gate_id,
                               client_secret=args.secret, scene=args.scene, anchor_jwk=jwk)
            except ValueError as exc:
                raise GateError("not_provisioned", f"unusable trust anchor: {exc}") from None
            _print({"provisioned": args.gate_id, "scene": args.scene, "state": args.state})
            return 0
        gate = Gate(args.state)
        try:
            if args.cmd == "sync":
                _print(gate.sync().to_json())
            elif args.cmd == "verify":
                codes = (line.rstrip("\r\n") for line in sys.stdin) \
                    if args.codes == ["-"] else iter(args.codes)
                for code in codes:
                    _print(gate.verify_code(code).to_json())
            elif args.cmd == "tap":
                _print(gate.tap(args.card_no, args.region, args.mac, request_id=args.request_id,
                                scanned_at=args.scanned_at).to_json())
            elif args.cmd == "upload":
                report = gate.upload(batch=args.batch)
                _print({"uploaded": report.uploaded, "remaining": report.remaining,
                        "statuses": report.counts()})
            else:
                _print(gate.status())
        finally:
            gate.close()
    except Offline as exc:
        _print({"error": exc.code, "message": exc.message})
        return 3
    except GateError as exc:
        _print({"error": exc.code, "message": exc.message})
        return 1
    return 0
