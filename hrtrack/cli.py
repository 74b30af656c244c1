"""The `hrtrack` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

DEFAULT_DATA_DIR = ".hrtrack"


def data_dir_from(args: argparse.Namespace) -> Path:
    return Path(getattr(args, "data_dir", None) or os.environ.get("HRTRACK_DATA_DIR")
                or DEFAULT_DATA_DIR)


def stack_info(args: argparse.Namespace) -> dict[str, Any]:
    """Settings of the running dev stack in the data dir, if there is one."""
    path = data_dir_from(args) / "dev.json"
    if path.exists():
        info: dict[str, Any] = json.loads(path.read_text())
        return info
    return {}


def service_and_token(args: argparse.Namespace, service: str) -> tuple[str, str] | None:
    """The service's URL and a token: flags, then HRTRACK_* variables, then the dev stack."""
    info = stack_info(args)
    url = args.url or os.environ.get(f"HRTRACK_{service.upper()}_URL") \
        or info.get(f"{service}_url")
    token = args.token or os.environ.get("HRTRACK_TOKEN") or info.get("coordinator_token")
    if not url or not token:
        print(f"no {service}: set HRTRACK_DATA_DIR to a running dev stack, or --url and "
              "--token", file=sys.stderr)
        return None
    return url, token


def cmd_dev(args: argparse.Namespace) -> int:
    from hrtrack.devstack import run_dev

    clock = args.clock or os.environ.get("HRTRACK_CLOCK") or None
    return run_dev(data_dir_from(args), date.fromisoformat(clock) if clock else None)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from hrtrack.devstack import migrate

    url = args.database_url or os.environ.get("HRTRACK_DATABASE_URL") \
        or stack_info(args).get("database_url")
    if not url:
        print("no database: set HRTRACK_DATABASE_URL or --database-url", file=sys.stderr)
        return 2
    migrate(url)
    print("migrations applied")
    return 0


def token_secret(args: argparse.Namespace) -> str:
    secret = os.environ.get("HRTRACK_TOKEN_SECRET")
    if secret:
        return secret
    path = data_dir_from(args) / "secret"
    if path.exists():
        return path.read_text().strip()
    raise SystemExit("no token secret: set HRTRACK_TOKEN_SECRET or HRTRACK_DATA_DIR "
                     "to a dev stack's data dir")


def cmd_tokens_create(args: argparse.Namespace) -> int:
    from shared.auth import Role, TokenError, create_token

    try:
        token = create_token(token_secret(args), Role(args.role),
                             agency_id=uuid.UUID(args.agency) if args.agency else None,
                             subject=args.subject, ttl=timedelta(days=args.days))
    except (TokenError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def cmd_plan_parse(args: argparse.Namespace) -> int:
    from shared.plan_parser import parse_plan, plan_actions_json

    text = Path(args.file).read_text(encoding="utf-8", errors="replace")
    json.dump(plan_actions_json(parse_plan(text)), sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from hrtrack.push import push_file

    found = service_and_token(args, "intake")
    if found is None:
        return 2
    url, token = found
    return push_file(Path(args.file), url=url, token=token, source=args.source,
                     batch_size=args.batch_size)


def cmd_agencies_load(args: argparse.Namespace) -> int:
    from hrtrack.agencies import load_file

    found = service_and_token(args, "tracker")
    if found is None:
        return 2
    url, token = found
    return load_file(Path(args.file), url=url, token=token)


def cmd_replay(args: argparse.Namespace) -> int:
    from hrtrack.replay import replay

    found = service_and_token(args, "notifier")
    if found is None:
        return 2
    url, token = found
    return replay(url=url, token=token, start=date.fromisoformat(args.start),
                  end=date.fromisoformat(args.end))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hrtrack", description=__doc__)
    parser.add_argument("--data-dir", help="dev stack data dir (default .hrtrack, "
                                           "or HRTRACK_DATA_DIR)")
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run the whole stack locally")
    dev.add_argument("--data-dir", dest="data_dir", default=argparse.SUPPRESS)
    dev.add_argument("--clock", help="YYYY-MM-DD: every service takes this date as today")
    dev.set_defaults(func=cmd_dev)

    db = sub.add_parser("db", help="database").add_subparsers(dest="db_command", required=True)
    upgrade = db.add_parser("upgrade", help="apply the migrations of every service")
    upgrade.add_argument("--database-url")
    upgrade.set_defaults(func=cmd_db_upgrade)

    tokens = sub.add_parser("tokens", help="API tokens").add_subparsers(
        dest="tokens_command", required=True)
    create = tokens.add_parser("create", help="print a new token")
    create.add_argument("--role", choices=["coordinator", "agency"], required=True)
    create.add_argument("--agency", help="agency id (agency tokens)")
    create.add_argument("--subject", help="who the token is for")
    create.add_argument("--days", type=int, default=90, help="validity in days")
    create.set_defaults(func=cmd_tokens_create)

    plan = sub.add_parser("plan", help="National Plan documents").add_subparsers(
        dest="plan_command", required=True)
    parse = plan.add_parser("parse", help="print the plan's actions as JSON")
    parse.add_argument("file")
    parse.set_defaults(func=cmd_plan_parse)

    push = sub.add_parser("push", help="post a JSON or CSV file to intake")
    push.add_argument("file")
    push.add_argument("--source", choices=["upr", "treaty_body", "plan"],
                      help="CSV source (default: from the file name or column)")
    push.add_argument("--url")
    push.add_argument("--token")
    push.add_argument("--batch-size", type=int, default=1000)
    push.set_defaults(func=cmd_push)

    agencies = sub.add_parser("agencies", help="the agency directory").add_subparsers(
        dest="agencies_command", required=True)
    load = agencies.add_parser("load", help="create or update agencies from a CSV or JSON file")
    load.add_argument("file")
    load.add_argument("--url", help="tracker URL")
    load.add_argument("--token")
    load.set_defaults(func=cmd_agencies_load)

    replay = sub.add_parser("replay", help="run one reminder pass per day over a date range")
    replay.add_argument("--from", dest="start", required=True, help="YYYY-MM-DD")
    replay.add_argument("--to", dest="end", required=True, help="YYYY-MM-DD")
    replay.add_argument("--url", help="notifier URL")
    replay.add_argument("--token")
    replay.set_defaults(func=cmd_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
