"""Host names and subject alternative names as mail admins type them.

RFC 1035/1123 host names: labels of letters, digits and hyphens, 1..63 octets each, at most 253 in
all. Internationalised names are converted to A-labels (``xn--``) before they enter a certificate,
because RFC 5280 SANs are IA5String -- by IDNA 2008 (RFC 5891) with the UTS 46 mapping, as registries
and MTAs do (Python's own ``"idna"`` codec is IDNA 2003: it turns ``faß`` into ``fass``, a different
name). An ``xn--`` label given as is must be a valid A-label: one that decodes to a valid U-label and
encodes back to itself.

A label that mixes scripts (``pаypal``: Latin with a Cyrillic ``а``), or that is written entirely in
Cyrillic letters that pass for Latin ones (``аррӏе``) under a Latin top-level domain, is refused unless
``allow_mixed_script=True``: such a name reads as another one (UTS 39). The combinations a language
writes in one label -- Latin with Han, Hiragana and Katakana (Japanese), with Han and Bopomofo
(Chinese), with Han and Hangul (Korean) -- are not mixed in this sense.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import re
import unicodedata

import idna
from cryptography import x509

from certkit.errors import InputError

__all__ = ["dns_name", "domain_rank", "general_name", "is_ip_address", "parse_san", "unicode_name",
           "wildcard_covers"]

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

#: UTS 39 "highly restrictive": the script sets a single label may combine.
_ALLOWED_SCRIPT_SETS = (
    frozenset({"Latin", "Han", "Hiragana", "Katakana"}),
    frozenset({"Latin", "Han", "Bopomofo"}),
    frozenset({"Latin", "Han", "Hangul"}),
)
#: Cyrillic letters that render like Latin ones: a label of only these reads as a Latin word.
_CYRILLIC_LOOKALIKES = frozenset("асԁеһіјӏорԛѕԝхуъьҽпгѵѡ")
#: Top-level domains where an all-Cyrillic label is expected, not a disguise.
_CYRILLIC_TLDS = frozenset({"ru", "su", "by", "ua", "kz", "kg", "bg", "mk", "rs", "me", "mn", "tj", "uz", "ba",
                            "xn--p1ai", "xn--p1acf", "xn--90ais", "xn--j1amh", "xn--90a3ac", "xn--d1alf",
                            "xn--l1acc", "xn--80ao21a", "xn--90ae", "xn--node"})
_SCRIPT_WORD = {"CJK": "Han", "IDEOGRAPHIC": "Han"}


def is_ip_address(value: str) -> bool:
    """True when ``value`` is an IPv4 or IPv6 address literal."""
    try:
        ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=4096)
def _script(char: str) -> str | None:
    """The script of a letter, from its Unicode name (``None`` for marks, digits and modifier letters, which
    take the script of their neighbours: UTS 24 Common and Inherited)."""
    if not unicodedata.category(char).startswith("L") or unicodedata.category(char) == "Lm":
        return None
    word = unicodedata.name(char, "").split(" ", 1)[0]
    if not word:
        return None
    return _SCRIPT_WORD.get(word, word.capitalize())


def _scripts(ulabel: str) -> list[str]:
    return sorted({s for s in map(_script, ulabel) if s is not None})


def _lookalike_problem(ulabel: str, tld: str) -> str | None:
    """Why the U-label ``ulabel`` can pass for another name, or ``None``."""
    scripts = _scripts(ulabel)
    if len(scripts) > 1 and not any(set(scripts) <= allowed for allowed in _ALLOWED_SCRIPT_SETS):
        return f"it mixes the scripts {' and '.join(scripts)} in the label {ulabel!r}"
    if (scripts == ["Cyrillic"] and tld not in _CYRILLIC_TLDS and tld.isascii()
            and all(c in _CYRILLIC_LOOKALIKES for c in ulabel if _script(c))):
        return f"the label {ulabel!r} is written in Cyrillic letters that look like Latin ones"
    return None


def _idna_error(whole: str, label: str, exc: Exception) -> InputError:
    return InputError(
        f"{whole!r} is not a valid internationalised host name: the label {label!r} is not allowed by IDNA 2008 "
        f"({exc}).",
        "Check the spelling, or give the name in its xn-- (A-label) form as the registry shows it.",
    )


def _to_alabel(label: str, whole: str) -> tuple[str, str]:
    """``label`` (already UTS 46 mapped) as (A-label, U-label); an ``xn--`` label must be a valid A-label."""
    if label.isascii():
        lower = label.lower()
        if not lower.startswith("xn--"):
            return lower, lower
        try:
            ulabel = idna.decode(lower)
            valid = idna.encode(ulabel).decode("ascii") == lower
        except (idna.IDNAError, UnicodeError) as exc:
            raise InputError(
                f"{whole!r} is not a valid host name: {label!r} starts with xn-- but is not a valid Punycode "
                f"A-label ({exc}).",
                "Give the name as it is registered: in Unicode (bücher.example) or its exact A-label "
                "(xn--bcher-kva.example).") from None
        if not valid:
            raise InputError(f"{whole!r} is not a valid host name: {label!r} is not the A-label of {ulabel!r}.",
                             f"Write {idna.encode(ulabel).decode('ascii')} or {ulabel}.")
        return lower, ulabel
    try:
        return idna.encode(label).decode("ascii"), label
    except (idna.IDNAError, UnicodeError) as exc:
        raise _idna_error(whole, label, exc) from None


def dns_name(name: str, *, allow_wildcard: bool = False, allow_mixed_script: bool = False) -> str:
    """Return ``name`` as a lower-case A-label host name, or raise :class:`InputError` saying why not.

    Unicode names are mapped by UTS 46 (non-transitional: ``ß`` stays ``ß``) and converted by IDNA 2008;
    ``xn--`` labels must be valid A-labels. A label that mixes scripts or is a Cyrillic look-alike of a
    Latin word is refused unless ``allow_mixed_script`` (see the module documentation).
    """
    raw = _mapped(name)
    out: list[str] = []
    ulabels: list[str] = []
    for i, label in enumerate(raw.split(".")):
        if label == "*" and i == 0:
            if not allow_wildcard:
                raise InputError(f"{name!r} is a wildcard name, which is not allowed here.",
                                 "Domain Security needs the real host and domain names; name them explicitly.")
            out.append("*")
            ulabels.append("*")
            continue
        alabel, ulabel = _checked_label(label, name)
        out.append(alabel)
        ulabels.append(ulabel)
    result = ".".join(out)
    if len(result) > 253:
        raise InputError(f"The host name is {len(result)} characters long, over the limit of 253.",
                         "Use a shorter name.")
    if not allow_mixed_script:
        _refuse_lookalikes(name, result, out, ulabels)
    return result


def _mapped(name: str) -> str:
    """``name`` stripped, UTS 46-mapped when not ASCII, without its final dot; refused when empty or spaced."""
    if not isinstance(name, str):
        raise InputError(f"A host name must be text, not {type(name).__name__}.")
    raw = name.strip()
    if any(c.isspace() for c in raw):
        raise InputError(f"{name!r} is not a valid host name: it contains a space.",
                         "Remove the space; host names are letters, digits, hyphens and dots.")
    if not raw.isascii():
        try:
            # UTS 46 mapping: case folding, full-width forms, the ideographic full stop as a dot.
            raw = idna.uts46_remap(raw, std3_rules=False, transitional=False)
        except (idna.IDNAError, UnicodeError) as exc:
            raise InputError(f"{name!r} is not a valid internationalised host name ({exc}).",
                             "Check the spelling, or give the name in its xn-- (A-label) form.") from None
    raw = raw.removesuffix(".")
    if not raw:
        raise InputError("The host name is empty.", "Give a fully qualified name such as mail.contoso.com.")
    return raw


def _checked_label(label: str, name: str) -> tuple[str, str]:
    """One label as (A-label, U-label), or :class:`InputError` saying what is wrong with it."""
    if not label:
        raise InputError(f"{name!r} is not a valid host name: it has an empty label (two dots in a row).",
                         "Remove the extra dot.")
    if "_" in label:
        raise InputError(f"{name!r} is not a valid host name: it contains an underscore.",
                         "Host names in certificates may hold only letters, digits and hyphens.")
    alabel, ulabel = _to_alabel(label, name)
    if len(alabel) > 63:
        raise InputError(
            f"{name!r} is not a valid host name: the label {label[:20]!r}... is {len(alabel)} characters "
            "long, over the limit of 63.",
            "Shorten that part of the name.",
        )
    if not _LABEL.match(alabel):
        raise InputError(
            f"{name!r} is not a valid host name: the label {label!r} has a character that is not a letter, "
            "digit or hyphen, or starts or ends with a hyphen.",
            "Use letters, digits and inner hyphens only.",
        )
    return alabel, ulabel


def _refuse_lookalikes(name: str, result: str, alabels: list[str], ulabels: list[str]) -> None:
    for ulabel in (u for u in ulabels if not u.isascii()):
        problem = _lookalike_problem(ulabel, alabels[-1])
        if problem is not None:
            shown = ".".join(ulabels)
            raise InputError(
                f"{name!r} ({result}) can pass for a different name: {problem}"
                + (f" (it reads {shown!r})" if shown != name.strip().rstrip(".") else "") + ".",
                "Type the name in one script. If it really is registered so, allow it with "
                "--allow-mixed-script (allow_mixed_script=True).",
            )


def unicode_name(name: str) -> str:
    """An A-label host name as people read it (U-labels); labels that are not valid A-labels stay as they are."""
    out = []
    for label in name.split("."):
        if label.lower().startswith("xn--"):
            with contextlib.suppress(idna.IDNAError, UnicodeError):
                label = idna.decode(label)
        out.append(label)
    return ".".join(out)


def general_name(value: str, *, allow_mixed_script: bool = False) -> x509.GeneralName:
    """A SAN entry for a bare value: an IP address literal or a DNS name."""
    if is_ip_address(value):
        return x509.IPAddress(ipaddress.ip_address(value.strip("[]")))
    return x509.DNSName(dns_name(value, allow_mixed_script=allow_mixed_script))


def parse_san(spec: str, *, allow_mixed_script: bool = False) -> x509.GeneralName:
    """Parse ``DNS:name`` or ``IP:address`` (the form ``--san`` takes); a bare value is guessed."""
    kind, sep, value = spec.partition(":")
    if not sep or kind.upper() not in {"DNS", "IP"}:
        if is_ip_address(spec):
            return general_name(spec)
        if ":" not in spec:
            return x509.DNSName(dns_name(spec, allow_mixed_script=allow_mixed_script))
        raise InputError(f"{spec!r} is not a SAN entry certkit understands.",
                         "Write DNS:mail.contoso.com or IP:192.0.2.25.")
    if kind.upper() == "IP":
        try:
            return x509.IPAddress(ipaddress.ip_address(value.strip("[]")))
        except ValueError:
            raise InputError(f"{value!r} is not an IP address.", "Write IP:192.0.2.25 or IP:2001:db8::25.") from None
    return x509.DNSName(dns_name(value, allow_mixed_script=allow_mixed_script))


def domain_rank(name: str, domain: str) -> int | None:
    """How ``name`` (a DNS SAN, or the CN Postfix reports) stands to the partner domain ``domain``:
    0 the domain itself, 1 a host within it (``.domain`` at any depth), 2 a wildcard within it
    (``*.domain``, ``*.sub.domain``), ``None`` outside it (``evilfabrikam.com`` is outside ``fabrikam.com``).
    Case-insensitive; a trailing dot is ignored. The rule of :func:`certkit.core.verify.domain_matches`."""
    n = name.lower().rstrip(".")
    d = domain.lower().rstrip(".")
    if n == d:
        return 0
    if n.startswith("*."):
        return 2 if n[2:] == d or n[2:].endswith("." + d) else None
    return 1 if n.endswith("." + d) else None


def wildcard_covers(pattern: str, host: str) -> bool:
    """Whether the wildcard ``pattern`` (``*.example.com``) covers ``host`` (both compared as given).

    RFC 6125 6.4.3 as browsers and Postfix apply it: ``*`` is the whole left-most label and stands for
    exactly one label; no partial-label wildcards, no wildcard over a bare public suffix.
    """
    if not pattern.startswith("*.") or pattern.count("*") != 1:
        return False
    base = pattern[2:]
    if base.count(".") < 1:
        return False
    head, sep, rest = host.partition(".")
    return bool(sep) and bool(head) and rest == base
