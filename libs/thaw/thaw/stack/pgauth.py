"""How a private Postgres cluster authenticates: SCRAM passwords, no trust.

Every local user of the machine can reach 127.0.0.1, so the cluster trusts
nobody: each ``local`` and ``host`` line of pg_hba.conf asks for a
scram-sha-256 password. The password is generated once and kept in a 0600
file owned by the user running thaw (never in an environment variable, a
log, stack.json or a health reply); services read it from that file
(``Settings.database_password()``).
"""

from __future__ import annotations

import secrets
from pathlib import Path

from thaw_core.private_file import read_or_create

METHOD = "scram-sha-256"

HBA = (
    f"# Written by thaw (PgCluster.init()): a password for everyone, only from this machine.\n"
    f"local all all {METHOD}\n"
    f"host all all 127.0.0.1/32 {METHOD}\n"
    f"local replication all {METHOD}\n"
    f"host replication all 127.0.0.1/32 {METHOD}\n"
)


def default_password_file(data_dir: Path) -> Path:
    """``<state_dir>/postgres-password`` for the stack's ``<state_dir>/postgres``."""
    return data_dir.with_name(f"{data_dir.name}-password")


def read_password(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def ensure_password(path: Path) -> str:
    """The cluster's password, generated (URL-safe, 256 bits) on first use."""
    return read_or_create(path, lambda: secrets.token_urlsafe(32))


def alter_role_sql(role: str, password: str) -> str:
    # Hashed by the server (password_encryption = scram-sha-256): the
    # plaintext is never stored.
    quoted_role = '"' + role.replace('"', '""') + '"'
    quoted_pw = "'" + password.replace("'", "''") + "'"
    return f"ALTER ROLE {quoted_role} PASSWORD {quoted_pw};\n"
