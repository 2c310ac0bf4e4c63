"""Account commands: `admin create-user`, `create-project`, `keys …`, `tokens …`, `audit`,
`secrets rotate`.

Each runs against a server (`--server URL`, over the HTTP API) or, without `--server`,
straight on the database of OPSPILOT_DATABASE_URL as the operator. Against a server, the
credential is `--token` (a personal token) or else the admin token: `--admin-token`,
OPSPILOT_ADMIN_TOKEN, or the file `opspilot serve` wrote for that port on this machine.
Secrets are printed once; the stores keep hashes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from opspilot.settings import Settings

Command = Callable[[str, Callable[[Any], Awaitable[int]], str], argparse.ArgumentParser]


class CliError(Exception):
    pass


# -- the admin token `serve` leaves for local commands -------------------------------------------


def state_dir(settings: Settings) -> Path:
    if settings.state_dir:
        return Path(settings.state_dir)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "opspilot"


def admin_token_file(settings: Settings, port: int) -> Path:
    return state_dir(settings) / f"admin-token-{port}"


def write_admin_token(settings: Settings, port: int) -> tuple[str, Path]:
    """A fresh admin token for this `serve`, in a file only this user can read."""
    token = "opa_" + secrets.token_urlsafe(32)
    path = admin_token_file(settings, port)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    os.chmod(path, 0o600)  # an older file keeps its mode through O_CREAT
    return token, path


def local_secret_key(settings: Settings) -> str:
    """`serve`'s OPSPILOT_SECRET_KEY when none is set: made once, kept (mode 0600) in the
    state dir, since channel secrets stored in PostgreSQL must decrypt after a restart."""
    from opspilot.adapters.secrets import new_secret_key

    path = state_dir(settings) / "secret-key"
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = new_secret_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def admin_token_for(server: str, given: str | None) -> str:
    settings = Settings()
    if given or settings.admin_token:
        return str(given or settings.admin_token)
    port = urlsplit(server).port or (443 if server.startswith("https") else 80)
    path = admin_token_file(settings, port)
    try:
        return path.read_text().strip()
    except OSError:
        raise CliError(
            f"no admin token: pass --admin-token, set OPSPILOT_ADMIN_TOKEN, or run this on "
            f"the machine of `opspilot serve` (it writes {path})"
        ) from None


# -- transport ----------------------------------------------------------------------------------


async def call(
    server: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> Any:
    import aiohttp

    try:
        async with aiohttp.ClientSession() as session, session.request(
            method, server.rstrip("/") + path, json=body, headers=headers or {}
        ) as response:
            raw = await response.read()
            doc = json.loads(raw) if raw else None
            if response.status >= 400:
                raise CliError(f"{path}: HTTP {response.status}: {doc}")
            return doc
    except aiohttp.ClientError as exc:
        raise CliError(f"cannot reach {server}: {exc}") from None


@contextlib.asynccontextmanager
async def database_container() -> AsyncIterator[Any]:
    settings = Settings()
    if not settings.database_url:
        raise CliError("no store configured: pass --server URL of a running server, "
                       "or set OPSPILOT_DATABASE_URL")
    from opspilot.container import build_container, start_container, stop_container

    # Accounts need PostgreSQL, and Redis to drop cached principals; nothing else is opened.
    settings = settings.model_copy(update={"amqp_url": None, "opensearch_url": None,
                                           "ai_url": None})
    container = build_container(settings)
    await start_container(container)
    try:
        yield container
    finally:
        await stop_container(container)


def _bearer(args: Any) -> dict[str, str]:
    token = args.token or os.environ.get("OPSPILOT_TOKEN")
    if not token:
        token = admin_token_for(args.server, getattr(args, "admin_token", None))
    return {"Authorization": f"Bearer {token}"}


def _print(doc: Any) -> None:
    """One JSON object per line, datetimes written as the API writes them (orjson)."""
    import orjson

    print(orjson.dumps(doc).decode())


# -- projects and users ---------------------------------------------------------------------------


async def new_project(name: str, server: str | None, owner: str | None = None,
                      admin_token: str | None = None) -> dict[str, Any]:
    body = {"name": name, **({"owner": owner} if owner else {})}
    if server:
        headers = {"Authorization": f"Bearer {admin_token_for(server, admin_token)}"}
        created: dict[str, Any] = await call(server, "POST", "/api/admin/projects", body, headers)
        return created
    async with database_container() as container:
        made = await container.accounts().create_project(name, owner)
    return {"project_id": made.project_id, "name": made.project_name, "api_key": made.api_key,
            "token": made.token, "owner_id": made.user_id}


async def create_project(args: Any) -> int:
    doc = await new_project(args.name, args.server, args.owner, args.admin_token)
    if args.json:
        _print(doc)
        return 0
    print(f"project  {doc['name']}  id {doc['project_id']}")
    print(f"API key  {doc['api_key']}   (ingestion: X-API-Key)")
    print(f"token    {doc['token']}   (queries: Authorization: Bearer …, X-Project-ID)")
    print("Both secrets are shown once; only their hashes are stored.")
    return 0


async def create_user(args: Any) -> int:
    if args.server:
        headers = {"Authorization": f"Bearer {admin_token_for(args.server, args.admin_token)}"}
        _print(await call(args.server, "POST", "/api/admin/users",
                          {"email": args.email, "admin": args.admin}, headers))
        return 0
    async with database_container() as container:
        user, token = await container.accounts().create_user(args.email, args.admin)
    _print({"id": user.id, "email": user.name, "admin": user.admin, "token": token.secret})
    return 0


# -- keys ------------------------------------------------------------------------------------------


async def keys(args: Any) -> int:
    if args.server:
        await _keys_over_http(args)
        return 0
    from opspilot.domain.tenancy import OPERATOR, KeyScope
    from opspilot.domain.timewindow import parse_duration
    from opspilot.entrypoints.api.responses import key_created_doc, key_doc

    async with database_container() as container:
        accounts, now = container.accounts(), container.clock().now()
        if args.action == "list":
            for key in await accounts.list_keys(OPERATOR, args.project):
                _print(key_doc(key, now))
            return 0
        if args.action == "create":
            made = await accounts.create_key(OPERATOR, args.project, args.name,
                                             KeyScope(args.scope))
        elif args.action == "rotate":
            grace = timedelta(0) if args.grace == "0" else parse_duration(args.grace, "grace")
            made = await accounts.rotate_key(OPERATOR, args.project, _key_id(args), grace)
        else:
            _print(key_doc(await accounts.revoke_key(OPERATOR, args.project, _key_id(args)), now))
            return 0
        _print(key_created_doc(made.key, made.secret, now))
    return 0


async def _keys_over_http(args: Any) -> None:
    headers = {**_bearer(args), "X-Project-ID": args.project}
    if args.action == "list":
        for key in (await call(args.server, "GET", "/api/keys", headers=headers))["keys"]:
            _print(key)
    elif args.action == "create":
        _print(await call(args.server, "POST", "/api/keys",
                          {"name": args.name, "scope": args.scope}, headers))
    elif args.action == "rotate":
        _print(await call(args.server, "POST", f"/api/keys/{_key_id(args)}/rotate",
                          {"grace": args.grace}, headers))
    else:
        await call(args.server, "DELETE", f"/api/keys/{_key_id(args)}", headers=headers)
        _print({"id": args.key, "status": "revoked"})


def _key_id(args: Any) -> str:
    if not args.key:
        raise CliError(f"keys {args.action} needs --key ID (see `opspilot keys list`)")
    return str(args.key)


# -- tokens -----------------------------------------------------------------------------------------


async def tokens(args: Any) -> int:
    if args.server:
        await _tokens_over_http(args)
        return 0
    from opspilot.domain.tenancy import OPERATOR
    from opspilot.domain.timewindow import parse_duration
    from opspilot.entrypoints.api.responses import token_created_doc, token_doc

    if not args.user:
        raise CliError("on the database, name the user: --user EMAIL")
    async with database_container() as container:
        accounts, now = container.accounts(), container.clock().now()
        user = await container.tenancy().find_user(args.user.strip().lower())
        if user is None:
            raise CliError(f"no user {args.user}")
        if args.action == "list":
            for token in await accounts.list_tokens(OPERATOR, user.id):
                _print(token_doc(token, now))
        elif args.action == "create":
            made = await accounts.create_token(OPERATOR, args.name,
                                               parse_duration(args.ttl, "ttl"), user.id)
            _print(token_created_doc(made.token, made.secret, now))
        else:
            token = await accounts.revoke_token(OPERATOR, _token_id(args), user.id)
            _print(token_doc(token, now))
    return 0


async def _tokens_over_http(args: Any) -> None:
    headers = _bearer(args)
    if args.action == "list":
        for token in (await call(args.server, "GET", "/api/tokens", headers=headers))["tokens"]:
            _print(token)
    elif args.action == "create":
        _print(await call(args.server, "POST", "/api/tokens",
                          {"name": args.name, "ttl": args.ttl}, headers))
    else:
        await call(args.server, "DELETE", f"/api/tokens/{_token_id(args)}", headers=headers)
        _print({"id": args.token_id, "status": "revoked"})


def _token_id(args: Any) -> str:
    if not args.token_id:
        raise CliError("tokens revoke needs --id TOKEN_ID (see `opspilot tokens list`)")
    return str(args.token_id)


# -- audit ------------------------------------------------------------------------------------------


async def audit(args: Any) -> int:
    if args.server:
        headers = _bearer(args)
        found = await call(args.server, "GET",
                           f"/api/projects/{args.project}/audit?limit={args.limit}",
                           headers=headers)
        for event in found["events"]:
            _print(event)
        return 0
    from opspilot.domain.tenancy import OPERATOR
    from opspilot.entrypoints.api.responses import audit_doc

    async with database_container() as container:
        for event in await container.accounts().audit_log(OPERATOR, args.project, args.limit):
            _print(audit_doc(event))
    return 0


# -- secrets ----------------------------------------------------------------------------------


async def secrets_command(args: Any) -> int:
    async with database_container() as container:
        changed = await container.postgres().channel_store.reseal_all()
    print(f"{changed} channels sealed under the current key (the first of OPSPILOT_SECRET_KEY)")
    return 0


# -- parser --------------------------------------------------------------------------------------


def _server_options(p: argparse.ArgumentParser, personal: bool) -> None:
    p.add_argument("--server", help="a running server's URL (default: the database)")
    p.add_argument("--admin-token", help="the server's admin token (else OPSPILOT_ADMIN_TOKEN, "
                   "else the file `opspilot serve` wrote)")
    if personal:
        p.add_argument("--token", help="act as this personal token's user (else OPSPILOT_TOKEN, "
                       "else the admin token)")


def add_commands(command: Command) -> None:
    p = command("create-project", create_project,
                "create a project; prints its API key and its owner's token")
    p.add_argument("name")
    p.add_argument("--owner", help="the first owner's e-mail (default: a new user owner@NAME)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _server_options(p, personal=False)

    p = command("admin", create_user, "operator commands: admin create-user EMAIL [--admin]")
    p.add_argument("action", choices=["create-user"])
    p.add_argument("email")
    p.add_argument("--admin", action="store_true", help="may create users and projects")
    _server_options(p, personal=False)

    p = command("keys", keys, "a project's API keys: list, create, rotate, revoke")
    p.add_argument("action", choices=["list", "create", "rotate", "revoke"])
    p.add_argument("--project", required=True, help="the project id")
    p.add_argument("--key", help="the key id (rotate, revoke)")
    p.add_argument("--name", default="default", help="the new key's name (create)")
    p.add_argument("--scope", default="ingest", choices=["ingest"])
    p.add_argument("--grace", default="24h",
                   help="how long a rotated key keeps working: 0 to 7d (rotate)")
    _server_options(p, personal=True)

    p = command("audit", audit, "a project's credential and membership changes, newest first")
    p.add_argument("--project", required=True, help="the project id")
    p.add_argument("--limit", type=int, default=100)
    _server_options(p, personal=True)

    p = command("secrets", secrets_command,
                "secrets rotate: re-encrypt channel secrets under the first OPSPILOT_SECRET_KEY")
    p.add_argument("action", choices=["rotate"])

    p = command("tokens", tokens, "personal bearer tokens: list, create, revoke")
    p.add_argument("action", choices=["list", "create", "revoke"])
    p.add_argument("--user", help="whose tokens (on the database)")
    p.add_argument("--id", dest="token_id", help="the token id (revoke)")
    p.add_argument("--name", default="cli", help="the new token's name (create)")
    p.add_argument("--ttl", default="90d", help="the new token's lifetime, e.g. 12h, 30d")
    _server_options(p, personal=True)
