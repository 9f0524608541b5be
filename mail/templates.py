"""Reply templates: Jinja2 text with TOML front matter, rendered in a sandbox.

A template is a ``.txt`` file::

    +++
    name = "acknowledge"
    description = "..."
    queues = []          # queue keys it applies to; empty: all
    subject = ""         # optional subject override
    status_after = ""    # optional status set when the reply is sent
    requires = []        # variables that must be provided
    +++
    Hello {{ requester.name | first_name }}, ...

Rendering uses a ``SandboxedEnvironment`` with ``StrictUndefined``: email-supplied
values cannot reach Python internals, and a missing value stops the reply with a
message naming the template, the line and the variable, instead of sending
"Dear ,".
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _shipped() -> Path:
    """The templates shipped with deskq (installed as the deskq_templates package)."""
    try:
        import deskq_templates  # type: ignore[import-not-found, unused-ignore]

        return Path(deskq_templates.__file__).parent
    except ImportError:  # running from a source tree without installing
        return Path(__file__).resolve().parent.parent / "templates"


SHIPPED = _shipped()


class TemplateError(Exception):
    """A template that cannot be loaded or rendered; the message names where and why."""


@dataclass(frozen=True)
class Template:
    """A loaded template: its front matter and Jinja2 source."""

    name: str
    path: Path
    description: str = ""
    queues: tuple[str, ...] = ()
    subject: str = ""
    status_after: str = ""
    requires: tuple[str, ...] = ()
    source: str = ""
    body_line: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


def first_name(value: Any) -> str:
    """``"Doe, Jane"`` -> ``Jane``; ``"Jane Doe"`` -> ``Jane``; an address -> its local part."""
    text = str(value or "").strip().strip('"')
    if not text:
        return ""
    if "," in text:
        text = text.split(",", 1)[1].strip()
    if "@" in text and " " not in text:
        text = text.split("@")[0].split(".")[0]
        return text[:1].upper() + text[1:]
    return text.split()[0]


def relative_age(value: Any, now: datetime | None = None) -> str:
    """A datetime as "3 days ago", "2 hours ago", "just now"."""
    if not isinstance(value, datetime):
        return str(value)
    now = now or datetime.now(UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    seconds = max((now - value).total_seconds(), 0)
    for unit, size in (("year", 31_536_000), ("month", 2_592_000), ("week", 604_800),
                       ("day", 86_400), ("hour", 3_600), ("minute", 60)):  # fmt: skip
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now"


def quote(value: Any) -> str:
    """Text quoted for a reply: every line prefixed with "> "."""
    lines = str(value or "").rstrip("\n").split("\n")
    return "\n".join(
        ">" + (" " + line if line and not line.startswith(">") else line) for line in lines
    )


def load(path: Path) -> Template:
    """Read one template file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"template {path}: cannot be read ({exc})") from None
    meta: dict[str, Any] = {}
    body, body_line = text, 1
    if text.startswith("+++\n"):
        head, sep, rest = text[4:].partition("\n+++\n")
        if not sep:
            raise TemplateError(f"template {path}: front matter opened with +++ is never closed")
        try:
            meta = tomllib.loads(head)
        except tomllib.TOMLDecodeError as exc:
            raise TemplateError(f"template {path}: front matter is not valid TOML: {exc}") from None
        body = rest
        body_line = text[: len(text) - len(rest)].count("\n") + 1
    known = {"name", "description", "queues", "subject", "status_after", "requires"}
    return Template(
        name=str(meta.get("name", path.stem)),
        path=path,
        description=str(meta.get("description", "")),
        queues=tuple(meta.get("queues", ())),
        subject=str(meta.get("subject", "")),
        status_after=str(meta.get("status_after", "")),
        requires=tuple(meta.get("requires", ())),
        source=body,
        body_line=body_line,
        extra={k: v for k, v in meta.items() if k not in known},
    )


def available(folders: list[Path] | None = None) -> list[Template]:
    """Every template by name: a user folder's template overrides a shipped one."""
    found: dict[str, Template] = {}
    for folder in [SHIPPED, *reversed(folders or [])]:
        if folder.is_dir():
            for path in sorted(folder.glob("*.txt")):
                template = load(path)
                found[template.name] = template
    return sorted(found.values(), key=lambda t: t.name)


def find(name: str, folders: list[Path] | None = None) -> Template:
    """The template called ``name``: user folders first (in order), then the shipped ones."""
    for folder in [*(folders or []), SHIPPED]:
        path = folder / f"{name}.txt"
        if path.is_file():
            return load(path)
    looked = ", ".join(str(f) for f in [*(folders or []), SHIPPED])
    raise TemplateError(f"no template named {name!r} (looked in {looked})")


def render(template: Template, context: dict[str, Any]) -> str:
    """Render ``template`` with ``context`` in the sandbox."""
    from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
    )
    env.filters["first_name"] = first_name
    env.filters["age"] = relative_age
    env.filters["quote"] = quote
    missing = [r for r in template.requires if r not in context]
    if missing:
        raise TemplateError(f"template {template.name!r} requires {', '.join(missing)}")
    try:
        compiled = env.from_string(template.source)
        return compiled.render(**context)
    except TemplateSyntaxError as exc:
        line = (exc.lineno or 1) + template.body_line - 1
        raise TemplateError(
            f"template {template.name!r} ({template.path}), line {line}: {exc.message}"
        ) from None
    except UndefinedError as exc:
        line = _template_line(exc) + template.body_line - 1
        raise TemplateError(
            f"template {template.name!r} ({template.path}), line {line}: {exc.message}"
        ) from None


def _template_line(exc: BaseException) -> int:
    """The template line a render error happened on (Jinja keeps it in the traceback)."""
    tb, line = exc.__traceback__, 1
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
