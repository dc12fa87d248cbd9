"""People, roles and tokens: who may do what in a data root.

A lead creates each person's token once (`python -m loop token create ana --role annotator`); the
token is random and only its sha256 is stored, so the database never holds a usable secret. Leads
do everything; annotators label, see only their own answers, and review the suspected labels a
lead sends them.

>>> from loop.store import Store
>>> store = Store(":memory:")
>>> token = create_token(store, "ana", "annotator")
>>> authenticate(store, token).name, authenticate(store, "wrong")
('ana', None)
>>> require(authenticate(store, token), "export")
Traceback (most recent call last):
...
loop.people.PermissionDenied: ana is an annotator: exporting labels needs the lead role
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from loop.store import Store, StoreError

ROLES = ("lead", "annotator")
# What each action is called when it is refused.
ACTIONS = {
    "label": "labeling",
    "create_project": "creating a project",
    "export": "exporting labels",
    "settings": "changing project settings",
    "auto_accept": "auto-accept",
    "resolve": "resolving conflicts",
    "lead_pages": "opening the lead pages",
    "people": "managing people and tokens",
    "review": "reviewing suspected labels",
    "fine_tune": "fine-tuning the backbone",
}
# An annotator reviews only the suspects a lead sent them (the Review page asks for those alone).
ALLOWED = {"lead": set(ACTIONS), "annotator": {"label", "review"}}
# Names the system writes into the label log itself; a person may never be one of them.
RESERVED = {"folder", "auto", "seed", "review", "system", "undo-auto", "imported"}
RESERVED_PREFIXES = ("auto-", "simulated-", "undo-")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")
DEFAULT_LEAD = "lead"


class PermissionDenied(PermissionError):
    """An action refused for a person's role; the message says who, what, and the role needed."""


@dataclass(frozen=True)
class Person:
    name: str
    role: str

    def can(self, action: str) -> bool:
        return action in ALLOWED.get(self.role, set())


def check_person_name(name: str) -> str:
    """A person's name as it appears in the label log: 1-40 letters, digits, '.', '-', '_'
    (starting with a letter or digit), and none of the names the system uses itself."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise StoreError(f"name {name!r} must be 1-40 letters, digits, '.', '-' or '_', starting "
                         "with a letter or digit")
    if name.lower() in RESERVED or name.lower().startswith(RESERVED_PREFIXES):
        raise StoreError(f"'{name}' is a name Juicer uses for its own labels "
                         f"({', '.join(sorted(RESERVED))}, auto-..., simulated-...); choose another")
    return name


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(store: Store, name: str, role: str, token: str | None = None) -> str:
    """Give `name` the `role` and a new token, returned once (only its hash is kept)."""
    check_person_name(name)
    if role not in ROLES:
        raise StoreError(f"role must be one of {', '.join(ROLES)}, got '{role}'")
    if token is not None and len(token) < 16:
        raise StoreError("a token must be at least 16 characters long")
    token = token or "jcr_" + secrets.token_urlsafe(24)
    store.add_person(name, role, token_hash(token))
    return token


def revoke(store: Store, name: str) -> None:
    if not store.revoke_person(name):
        raise StoreError(f"'{name}' has no active token (people: "
                         f"{', '.join(p['name'] for p in store.people() if not p['revoked_at']) or 'none'})")


def authenticate(store: Store, token: str | None) -> Person | None:
    """The person a token belongs to, or None (a wrong, empty or revoked token)."""
    if not token or not isinstance(token, str) or len(token) > 200:
        return None
    wanted = token_hash(token.strip())
    row = store.person_by_token_hash(wanted)
    if row is None or not hmac.compare_digest(row["token_hash"], wanted):
        return None
    return Person(row["name"], row["role"])


def require(person: Person | None, action: str) -> Person:
    """`person`, if their role allows `action`; PermissionDenied saying why otherwise."""
    what = ACTIONS[action]
    if person is None:
        raise PermissionDenied(f"{what} needs a token: sign in first")
    if not person.can(action):
        needed = "lead" if action not in ALLOWED["annotator"] else "annotator"
        raise PermissionDenied(f"{person.name} is an {person.role}: {what} needs the {needed} role")
    return person


def first_start(store: Store, token: str | None = None) -> str | None:
    """On a data root with nobody in it, create the lead "lead" (with `token`, e.g. from
    $JUICER_LEAD_TOKEN, or a new random one) and return the token to print; otherwise None."""
    if store.people():
        return None
    return create_token(store, DEFAULT_LEAD, "lead", token=token)
