"""The class-wide grading secret: the same inputs in every run and shard that shares it.

Each exercise's case is drawn from a seed the student never sees. Without
``DPTLEARN_GRADING_SECRET`` every run draws fresh seeds (``secrets.randbits``), as before: two
shards, or a regrade, test their students on different inputs. With it set (a CI secret, a file
on the cluster read into the variable), exercise ``<id>``'s seed is
``HMAC-SHA256(secret, "dptlearn-grading-seed\\0<id>")``: every run and shard with the same value
draws the same inputs, so ``--shard K/N`` + ``merge`` gives what one run gives, and a regrade of
a few students can replace their rows (``merge --regrade``). The manifest of a report folder keeps
only a fingerprint of the secret (another HMAC, which does not reveal the seeds), so that
``merge`` can refuse folders graded with different secrets; the secret itself is never written
or printed.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets

ENV = "DPTLEARN_GRADING_SECRET"
MIN_CHARS = 16


class SecretError(ValueError):
    """``DPTLEARN_GRADING_SECRET`` is set but unusable (the message says why, never the value)."""


def class_secret(environ=None) -> bytes | None:
    """The secret from the environment, or None when it is not set or empty (GitHub Actions
    gives an empty string for a repository secret that does not exist)."""
    value = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not value:
        return None
    if len(value) < MIN_CHARS:
        raise SecretError(f"{ENV} is set but has {len(value)} characters; expected at least "
                          f"{MIN_CHARS} (e.g. the output of `python -c 'import secrets; "
                          f"print(secrets.token_hex(32))'`), or unset it for fresh inputs per run")
    return value.encode("utf-8", "surrogateescape")


def _mac(secret: bytes, text: str) -> bytes:
    return hmac.new(secret, text.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()


class Seeds:
    """Where each exercise's seed comes from in one run: the class secret, or fresh randomness."""

    def __init__(self, secret: bytes | None):
        self._secret = secret

    @classmethod
    def from_environment(cls, environ=None) -> Seeds:
        return cls(class_secret(environ))

    def seed(self, ex_id: str) -> int:
        """A 63-bit seed for exercise ``ex_id``."""
        if self._secret is None:
            return secrets.randbits(63)
        return int.from_bytes(_mac(self._secret, f"dptlearn-grading-seed\0{ex_id}")[:8], "big") >> 1

    @property
    def fingerprint(self) -> str | None:
        """What the manifest keeps: 16 hex digits naming the secret (None without one)."""
        if self._secret is None:
            return None
        return _mac(self._secret, "dptlearn-grading-fingerprint").hex()[:16]
