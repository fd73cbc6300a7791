"""Which certificate Postfix's SMTP client presents: main.cf and master.cf as Postfix reads them.

What is read (Postfix 3.x syntax, postconf(5) and master(5)):

* ``main.cf``: logical lines (a line that starts with whitespace continues the previous one; empty lines
  and lines whose first non-blank character is ``#`` are skipped), ``name = value``, the last setting wins.
* ``$name``, ``${name}`` and ``$(name)`` expansion, recursively, and the conditional forms ``${name?value}``
  and ``${name:value}``; ``config_directory`` is the folder given; the key parameters default to their
  certificate parameter as in Postfix (``smtp_tls_key_file = $smtp_tls_cert_file``).
* The client certificate parameters: ``smtp_tls_chain_files`` (Postfix >= 3.4; when set, the others are
  ignored), else ``smtp_tls_cert_file``, ``smtp_tls_eccert_file`` and ``smtp_tls_dcert_file`` with their key
  files.
* ``master.cf`` next to main.cf: every ``smtp`` client service (command ``smtp``) whose ``-o name=value`` or
  ``-o { name = value }`` overrides one of those parameters presents its own certificate; ``$name`` in an
  override expands against main.cf and the service's other overrides.

Not handled, on purpose or for want of a definition: ``smtp_tls_policy_maps`` (a policy entry cannot
choose a client certificate: its attributes are the level, match, protocols, ciphers, exclude and the
DANE/TA files, so there is nothing to read there); ``transport_maps`` (which destinations use which
master.cf service: the report names the service); built-in defaults of parameters other than those above
(a ``$myhostname`` that main.cf does not set is refused with a message, not guessed); relative file names
(Postfix reads them from its queue directory); ``lmtp`` services and ``tlsproxy_client_*``; ``-o`` values
with ``$`` expansion of master.cf-only names.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from certkit.adapters.inputs import read_input
from certkit.core.text import printable
from certkit.errors import InputError, MalformedInputError

__all__ = ["CERT_PARAMETERS", "CertSetting", "PostfixClientCerts", "expand", "parse_main_cf", "parse_master_cf",
           "postfix_client_certificates"]

#: Certificate parameter -> its key parameter (the order in which Postfix loads them).
CERT_PARAMETERS: dict[str, str] = {
    "smtp_tls_cert_file": "smtp_tls_key_file",
    "smtp_tls_eccert_file": "smtp_tls_eckey_file",
    "smtp_tls_dcert_file": "smtp_tls_dkey_file",
}
CHAIN_PARAMETER = "smtp_tls_chain_files"
_CLIENT_PARAMETERS = frozenset({CHAIN_PARAMETER, *CERT_PARAMETERS, *CERT_PARAMETERS.values()})

#: Postfix's built-in defaults for the parameters this module reads (postconf -d).
_DEFAULTS: dict[str, str] = {name: "" for name in (CHAIN_PARAMETER, *CERT_PARAMETERS)}
_DEFAULTS.update({key: f"${cert}" for cert, key in CERT_PARAMETERS.items()})

_LIMIT = 4 * 1024 * 1024
_NAME = re.compile(r"[A-Za-z0-9_]+")


def parse_main_cf(text: str, *, source: str = "main.cf") -> dict[str, str]:
    """``name = value`` of every logical line of a main.cf (values unexpanded; the last setting wins)."""
    logical: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0].isspace():
            if not logical:
                raise MalformedInputError(f"{source} line {number} continues a line that does not exist.",
                                          "Remove the leading white space, or check the file.")
            start, previous = logical[-1]
            logical[-1] = (start, f"{previous} {stripped}")
        else:
            logical.append((number, stripped))
    params: dict[str, str] = {}
    for number, line in logical:
        name, eq, value = line.partition("=")
        name = name.strip()
        if not eq or not _NAME.fullmatch(name):
            raise MalformedInputError(f"{source} line {number} is not 'name = value': {printable(line, 80)}",
                                      "Fix the line (postconf -n shows what Postfix makes of the file).")
        params[name] = value.strip()
    return params


def _closing(value: str, start: int, open_char: str) -> int:
    """The index of the bracket that closes the one opened just before ``start`` (nesting counted)."""
    close_char = "}" if open_char == "{" else ")"
    depth = 1
    for i in range(start, len(value)):
        if value[i] == open_char:
            depth += 1
        elif value[i] == close_char:
            depth -= 1
            if depth == 0:
                return i
    return -1


def expand(value: str, params: Mapping[str, str], *, what: str = "main.cf", _depth: int = 0) -> str:
    """``value`` with ``$name``, ``${name}``, ``$(name)``, ``${name?text}`` and ``${name:text}`` expanded.

    A name neither ``params`` nor Postfix's defaults for the client certificate parameters define is an
    :class:`~certkit.errors.InputError`: guessing a built-in default would audit the wrong file.
    """
    if _depth > 50:
        raise MalformedInputError(f"{what}: $-expansion loops ({printable(value, 80)}).",
                                  "Check the parameters that refer to each other.")
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch != "$" or i + 1 >= len(value):
            out.append(ch)
            i += 1
            continue
        nxt = value[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
            continue
        if nxt in "{(":
            end = _closing(value, i + 2, nxt)
            if end < 0:
                raise MalformedInputError(f"{what}: unbalanced {nxt} in {printable(value, 80)}.", "Fix the value.")
            inner = value[i + 2:end]
            i = end + 1
        else:
            m = _NAME.match(value, i + 1)
            if not m:
                out.append(ch)
                i += 1
                continue
            inner = m.group(0)
            i = m.end()
        cond = re.fullmatch(r"([^?:]*)([?:])(.*)", inner, re.S)
        name, op, text = (cond.group(1).strip(), cond.group(2), cond.group(3)) if cond else (inner.strip(), "", "")
        known = name in params or name in _DEFAULTS
        if not known and not op:
            raise InputError(f"{what} refers to ${name}, which main.cf does not set.",
                             f"Set {name} in main.cf, or give the file name in full (postconf -x {name} shows "
                             f"Postfix's value).")
        current = expand(params.get(name, _DEFAULTS.get(name, "")), params, what=what, _depth=_depth + 1)
        if op == "?":
            out.append(expand(text.strip("{}"), params, what=what, _depth=_depth + 1) if current else "")
        elif op == ":":
            out.append("" if current else expand(text.strip("{}"), params, what=what, _depth=_depth + 1))
        else:
            out.append(current)
    return "".join(out)


@dataclass(frozen=True)
class MasterService:
    """One master.cf service: its name, type, command and ``-o`` overrides."""

    name: str
    type: str
    command: str
    overrides: dict[str, str] = field(default_factory=dict)


def _tokens(text: str) -> list[str]:
    """Whitespace-separated fields, where ``{ ... }`` (Postfix 3.0) is one field."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
        elif text[i] == "{":
            end = _closing(text, i + 1, "{")
            end = len(text) - 1 if end < 0 else end
            out.append(text[i:end + 1])
            i = end + 1
        else:
            j = i
            while j < len(text) and not text[j].isspace():
                j += 1
            out.append(text[i:j])
            i = j
    return out


def parse_master_cf(text: str, *, source: str = "master.cf") -> list[MasterService]:
    """The services of a master.cf with their ``-o`` overrides (``-o name=value`` or ``-o { name = value }``)."""
    entries: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0].isspace() and entries:
            start, previous = entries[-1]
            entries[-1] = (start, f"{previous} {stripped}")
        else:
            entries.append((number, stripped))
    services: list[MasterService] = []
    for number, entry in entries:
        fields = _tokens(entry)
        if len(fields) < 8:
            raise MalformedInputError(f"{source} line {number} has fewer than the 8 fields of a service: "
                                      f"{printable(entry, 80)}", "Fix the line (see master(5)).")
        overrides: dict[str, str] = {}
        args = fields[8:]
        for k, arg in enumerate(args):
            if arg == "-o" and k + 1 < len(args):
                setting = args[k + 1]
                setting = setting[1:-1] if setting.startswith("{") and setting.endswith("}") else setting
                name, eq, value = setting.partition("=")
                if eq and _NAME.fullmatch(name.strip()):
                    overrides[name.strip()] = value.strip()
        services.append(MasterService(fields[0], fields[1], os.path.basename(fields[7]), overrides))
    return services


@dataclass(frozen=True)
class CertSetting:
    """One certificate file the SMTP client presents: the parameter that names it, and for which service."""

    parameter: str
    file: Path
    key_file: Path | None
    #: ``None``: main.cf's setting (every smtp service without its own); else the master.cf service name.
    service: str | None = None


@dataclass(frozen=True)
class PostfixClientCerts:
    """What a Postfix configuration presents as its SMTP client certificate(s)."""

    config_directory: Path
    settings: tuple[CertSetting, ...]
    notes: tuple[str, ...] = ()


def _absolute(value: str, parameter: str, where: str) -> Path:
    path = Path(value)
    if not path.is_absolute():
        raise InputError(f"{where}: {parameter} = {printable(value, 120)} is a relative file name.",
                         "Postfix reads it from its queue directory: write the full path.")
    return path


def _settings(params: Mapping[str, str], where: str, service: str | None) -> list[CertSetting]:
    """The certificate files one parameter set (main.cf, or main.cf + a service's overrides) presents."""
    chain = expand(params.get(CHAIN_PARAMETER, ""), params, what=where)
    if chain.strip():
        # Postfix >= 3.4: each file holds a key and its chain (leaf first); the legacy parameters are ignored.
        return [CertSetting(CHAIN_PARAMETER, _absolute(f, CHAIN_PARAMETER, where), None, service)
                for f in re.split(r"[\s,]+", chain.strip()) if f]
    out: list[CertSetting] = []
    for cert_param, key_param in CERT_PARAMETERS.items():
        value = expand(params.get(cert_param, ""), params, what=where).strip()
        if not value:
            continue
        key = expand(params.get(key_param, _DEFAULTS[key_param]), params, what=where).strip()
        out.append(CertSetting(cert_param, _absolute(value, cert_param, where),
                               _absolute(key, key_param, where) if key else None, service))
    return out


def postfix_client_certificates(config_dir: str | os.PathLike[str]) -> PostfixClientCerts:
    """Read ``main.cf`` (and ``master.cf``, when present) in ``config_dir``: which certificate files the SMTP
    client presents, from main.cf and from every smtp service that overrides them in master.cf."""
    folder = Path(config_dir)
    main_cf = folder / "main.cf"
    if not folder.is_dir():
        raise InputError(f"--postfix-config {printable(str(folder), 240)} is not a folder.",
                         "Give Postfix's configuration folder (the one holding main.cf, e.g. /etc/postfix).")
    text = read_input(str(main_cf), what="main.cf", limit=_LIMIT).decode("utf-8", errors="replace")
    params = {"config_directory": str(folder), **parse_main_cf(text, source=str(main_cf))}
    settings = _settings(params, str(main_cf), None)
    notes: list[str] = []
    master_cf = folder / "master.cf"
    if master_cf.exists():
        master_text = read_input(str(master_cf), what="master.cf", limit=_LIMIT).decode("utf-8", errors="replace")
        for svc in parse_master_cf(master_text, source=str(master_cf)):
            if svc.command != "smtp" or svc.type != "unix" or not _CLIENT_PARAMETERS & set(svc.overrides):
                continue
            merged = {**params, **svc.overrides}
            settings += _settings(merged, f"{master_cf} service {svc.name}", svc.name)
    else:
        notes.append(f"{master_cf} does not exist: only main.cf was read.")
    if not settings:
        notes.append("No client certificate is configured (smtp_tls_chain_files, smtp_tls_cert_file, "
                     "smtp_tls_eccert_file and smtp_tls_dcert_file are empty): Postfix presents none.")
    return PostfixClientCerts(folder, tuple(settings), tuple(notes))
