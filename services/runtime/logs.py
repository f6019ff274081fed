"""Structured JSON logs (structlog) with incident and correlation ids, and personal data masked."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any

import structlog

# Personal data inside free text (an incident description, an error message quoting SQL
# parameters): mainland mobile numbers, landlines with their area code, 18-digit resident ID
# numbers, and a name that follows a word such as 联系人 or 姓名. Each keeps just enough to tell
# two values apart in an investigation (the prefix and last digits, the surname). The name rule
# is a heuristic: a name written without such a word stays, so names belong in named fields.
_ID_CARD = re.compile(r"(?<![0-9A-Za-z])([1-9]\d{5})[- ]?(?:\d{4}[- ]?\d{4}|\d{8})[- ]?(\d{3}[\dXx])(?![0-9A-Za-z])")
_MOBILE = re.compile(r"(?<![0-9A-Za-z+])(?:(?:\+|00)?86[- ]?)?(1[3-9]\d)[- ]?\d{4}[- ]?(\d{4})(?![0-9A-Za-z])")
# Area codes are 0 + 2 or 3 digits (010, 0731); local numbers 7 or 8 digits, never starting 0 or 1.
# Neither pattern may touch a letter, digit or hyphen on its outer edges, so no run of digits
# inside an id (a UUID's 0731-4123-5678 groups) is mistaken for a number.
_LANDLINE = re.compile(
    r"(?<![0-9A-Za-z+-])(?:(?:\+|00)?86[- ]?)?[(（]?(0\d{2,3})[)）]?[- ]?([2-9]\d{2,3})[- ]?\d{2}(\d{2})(?:(?:转|-|ext\.?)\d{1,5})?(?![0-9A-Za-z-])"
)
_NAME_CUE = re.compile(
    r"(姓名|联系人|报警人|报案人|举报人|求助人|当事人)(\s*[:：是为叫]?\s*)"
    r"((?:(?!电话|手机|号码|身份证|称|说|反映|表示|住|在|已|和|与|及)[\u4e00-\u9fff]){2,3})"
)
_SENSITIVE_KEYS = {"reporter_name", "name", "phone", "reporter_phone", "id_card", "password", "token"}


def mask_text(text: str) -> str:
    """Mask phone numbers (mobile and landline), ID-card numbers and cue-introduced names in free text."""
    text = _ID_CARD.sub(lambda m: f"{m.group(1)}********{m.group(2)}", text)
    text = _MOBILE.sub(lambda m: f"{m.group(1)}****{m.group(2)}", text)
    text = _LANDLINE.sub(lambda m: f"{m.group(1)}-****{m.group(3)}", text)
    return _NAME_CUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)[0]}{'*' * (len(m.group(3)) - 1)}", text)


def _mask_value(key: str, value: Any) -> Any:
    if key in _SENSITIVE_KEYS and value not in (None, ""):
        return "***"
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {k: _mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_value(key, v) for v in value]
    return value


def mask_personal_data(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: no raw phone number, ID number or name ever reaches a log line."""
    return {k: _mask_value(k, v) for k, v in event_dict.items()}


def configure_logging(service: str, level: str = "INFO", json: bool = True) -> None:
    """Route stdlib and structlog output through one JSON renderer tagged with the service."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        lambda _l, _n, d: {"service": service, **d},
    ]
    renderer = structlog.processors.JSONRenderer(ensure_ascii=False) if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        # Masking runs last, after the traceback became text: an exception message may quote SQL
        # parameters or a payload, and stdlib records (aiokafka, uvicorn) pass through here too.
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            mask_personal_data,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def bind_event_context(**ids: Any) -> None:
    """Attach ids (incident_id, event_id, correlation_id, causation_id) to every log line in this task."""
    structlog.contextvars.bind_contextvars(**{k: str(v) for k, v in ids.items() if v is not None})


def clear_event_context() -> None:
    """Forget ids bound for the previous message."""
    structlog.contextvars.clear_contextvars()


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger."""
    return structlog.get_logger(name)
