"""``laf keygen`` and ``laf verify-verdict``: the key pair for signed verdicts and the check a deploy step runs."""

from __future__ import annotations

from .. import defaults
from .output import add_format, console, print_json


def register(sub) -> None:
    k = sub.add_parser("keygen", help="create an Ed25519 key pair for signed verdicts (PATH private, 0600; PATH.pub public)",
                       description="The private key signs verdicts in the gate job (laf gate --sign PATH); the public key verifies them in the "
                       "deploy job (laf verify-verdict). An existing key is never overwritten.")
    k.add_argument("path", metavar="PATH", help="where the private key goes (PATH.pub gets the public key)")
    add_format(k, "the key paths and key id")
    k.set_defaults(handler=cmd_keygen)

    v = sub.add_parser("verify-verdict", help="exit 0 only for a validly signed PASS verdict of exactly this adapter version (1 otherwise)",
                       description="Checks the signature (VERDICT.sig), that VERDICT is the signed verdict, that the registered adapter's files still "
                       "hash to what was gated, the policy (with --policy) and that the verdict is PASS; each failure is named.")
    v.add_argument("verdict", metavar="VERDICT", help="verdict.json (its signature: VERDICT.sig)")
    v.add_argument("--key", required=True, metavar="PUB", help="the public key (PATH.pub from laf keygen)")
    v.add_argument("--adapter", required=True, metavar="NAME@VERSION", help="the adapter version to be deployed")
    v.add_argument("--registry", default=defaults.REGISTRY, help=f"registry folder (default: {defaults.REGISTRY})")
    v.add_argument("--policy", default=None, metavar="POLICY", help="require that the verdict was reached under this policy file")
    v.add_argument("--signature", default=None, metavar="SIG", help="the signature file (default: VERDICT.sig)")
    add_format(v, "the verified statement")
    v.set_defaults(handler=cmd_verify)


def cmd_keygen(args) -> int:
    from rich.markup import escape

    from ..gate.signing import key_id, keygen, load_public_key

    private, public = keygen(args.path)
    kid = key_id(load_public_key(public))
    if args.json:
        print_json({"private_key": str(private), "public_key": str(public), "key_id": kid})
        return 0
    console.print(f"private key: {escape(str(private))} (mode 0600: keep it in the gate job's secrets)")
    console.print(f"public key:  {escape(str(public))} (key id {kid[:16]}...; give it to the deploy job)")
    return 0


def cmd_verify(args) -> int:
    from rich.markup import escape

    from ..gate.signing import verify_verdict

    ok = verify_verdict(args.verdict, args.key, args.adapter, args.registry, args.policy, args.signature)
    pred = ok.statement["predicate"]
    if args.json:
        print_json({"ok": True, "adapter": ok.ref, "verdict": ok.verdict, "key_id": ok.key_id, "statement": ok.statement})
        return 0
    console.print(f"[bold green]verified[/]: {escape(ok.ref)} PASS under policy {escape(str(pred['policy'].get('source')))} "
                  f"(gated {escape(str(pred.get('gated_at')))}, signed by key {ok.key_id[:16]}...)")
    return 0
