"""Function logs as Lambda's Python runtime writes them.

- Root logger handler, text format: "[LEVEL]\\t<UTC time>.<ms>Z\\t<request id>\\t<msg>\\n"
  (request id "" during Init); JSON format when AWS_LAMBDA_LOG_FORMAT=JSON.
- AWS_LAMBDA_LOG_LEVEL sets the root level (TRACE means DEBUG); unset, Python's
  default (WARNING) stays, so logger.info() prints nothing, as on Lambda.
- Unhandled errors: one stdout write "[ERROR] <type>: <msg>\\rTraceback ...\\r..."
  whose trace lines have their leading spaces turned into U+00A0, so that the
  whole error stays one log event.
- If _LAMBDA_TELEMETRY_LOG_FD is set, log records (not print()) go to that fd
  in Lambda's framing instead: 4-byte type, 4-byte length, 8-byte timestamp (us),
  message; big-endian.
"""

import json
import logging
import os
import sys
import time
import traceback

_TEXT_FORMAT = "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n"
_TEXT_DATEFMT = "%Y-%m-%dT%H:%M:%S"
_JSON_DATEFMT = "%Y-%m-%dT%H:%M:%SZ"
_ERROR_LINE_SEP = "\r"
_ERROR_INDENT = "\u00a0"

_LEVELS = (logging.NOTSET, logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR,
           logging.CRITICAL)
_TEXT_FRAME = {lv: t.to_bytes(4, "big") for lv, t in zip(
    _LEVELS, (0xA55A0003, 0xA55A000B, 0xA55A000F, 0xA55A0013, 0xA55A0017, 0xA55A001B))}
_JSON_FRAME = {lv: t.to_bytes(4, "big") for lv, t in zip(
    _LEVELS, (0xA55A0002, 0xA55A000A, 0xA55A000E, 0xA55A0012, 0xA55A0016, 0xA55A001A))}

LOG_FORMAT_JSON = (os.environ.get("AWS_LAMBDA_LOG_FORMAT") or "").upper() == "JSON"
_level = os.environ.get("AWS_LAMBDA_LOG_LEVEL")
LOG_LEVEL = {None: "", "TRACE": "DEBUG"}.get(_level, _level).upper()

# The invoke being handled; log records carry it (kept after the invoke, like Lambda).
request_id = None
tenant_id = None

_RESERVED = {
    "name", "msg", "args", "levelname", "levelno", "pathname", "filename", "module",
    "exc_info", "exc_text", "stack_info", "lineno", "funcName", "created", "msecs",
    "relativeCreated", "thread", "threadName", "processName", "process",
    "aws_request_id", "tenant_id", "_frame_type",
}
_json_log_encoder = json.JSONEncoder(ensure_ascii=False, default=str)


def _bucket(levelno):
    return min(50, max(0, levelno)) // 10 * 10


class StdoutSink(object):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def log(self, msg, frame_type=None):
        sys.stdout.write(msg)

    def log_error(self, lines):
        sys.stdout.write(_ERROR_LINE_SEP.join(lines) + "\n")


class FramedSink(object):
    def __init__(self, fd):
        self.fd = int(fd)

    def __enter__(self):
        self.file = os.fdopen(self.fd, "wb", 0)
        return self

    def __exit__(self, *exc):
        self.file.close()

    def log(self, msg, frame_type=None):
        data = msg.encode("utf8")
        self.file.write(
            (frame_type or _TEXT_FRAME[logging.NOTSET])
            + len(data).to_bytes(4, "big")
            + (time.time_ns() // 1000).to_bytes(8, "big")
            + data
        )

    def log_error(self, lines):
        error_type = _JSON_FRAME if LOG_FORMAT_JSON else _TEXT_FRAME
        self.log("\n".join(lines), frame_type=error_type[logging.ERROR])


def create_sink():
    fd = os.environ.pop("_LAMBDA_TELEMETRY_LOG_FD", None)
    return FramedSink(fd) if fd is not None else StdoutSink()


class _RequestIdFilter(logging.Filter):
    def filter(self, record):
        record.aws_request_id = request_id or ""
        record.tenant_id = tenant_id
        return True


class LambdaLoggerHandler(logging.Handler):
    def __init__(self, log_sink, typed):
        super().__init__()
        self.log_sink = log_sink
        self._typed = typed

    def emit(self, record):
        msg = self.format(record)
        frame_type = None
        if self._typed:
            frame_type = getattr(record, "_frame_type", None) or _TEXT_FRAME.get(
                _bucket(record.levelno)
            )
        self.log_sink.log(msg, frame_type=frame_type)


class JsonFormatter(logging.Formatter):
    def __init__(self):
        super().__init__(datefmt=_JSON_DATEFMT)

    def format(self, record):
        record.levelno = _bucket(record.levelno)
        record.levelname = logging.getLevelName(record.levelno)
        record._frame_type = _JSON_FRAME.get(record.levelno, _JSON_FRAME[logging.NOTSET])
        exc = record.exc_info
        if isinstance(record.msg, dict) and not record.args:
            message = record.msg
        else:
            message = record.getMessage()
        out = {
            "timestamp": self.formatTime(record, self.datefmt),
            "level": record.levelname,
            "message": message,
            "logger": record.name,
            "stackTrace": traceback.format_tb(exc[2]) if exc else None,
            "errorType": exc[0].__name__ if exc else None,
            "errorMessage": str(exc[1]) if exc else None,
            "requestId": getattr(record, "aws_request_id", None),
            "location": "%s:%s:%s" % (record.pathname, record.funcName, record.lineno)
            if exc
            else None,
        }
        if getattr(record, "tenant_id", None) is not None:
            out["tenantId"] = record.tenant_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in out:
                out[key] = value
        return _json_log_encoder.encode({k: v for k, v in out.items() if v is not None}) + "\n"


def setup_logging(log_sink):
    logging.Formatter.converter = time.gmtime
    handler = LambdaLoggerHandler(log_sink, typed=LOG_FORMAT_JSON or bool(LOG_LEVEL))
    if LOG_FORMAT_JSON:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT, _TEXT_DATEFMT))
    root = logging.getLogger()
    if LOG_LEVEL in logging._nameToLevel:
        root.setLevel(LOG_LEVEL)
    handler.addFilter(_RequestIdFilter())
    root.addHandler(handler)


def _nbsp_indent(line):
    stripped = line.lstrip(" ")
    return _ERROR_INDENT * (len(line) - len(stripped)) + stripped


def log_error(error, log_sink, to_json):
    """Writes an error body (errorMessage/errorType/stackTrace) as Lambda logs it."""
    if LOG_FORMAT_JSON:
        entry = {
            "timestamp": time.strftime(_JSON_DATEFMT, logging.Formatter.converter(time.time())),
            "level": "ERROR",
        }
        entry.update(error)
        log_sink.log_error([to_json(entry)])
        return
    head = "[ERROR]"
    if error.get("errorType"):
        head += " " + error["errorType"]
    if error.get("errorMessage"):
        head += (":" if error.get("errorType") else "") + " " + error["errorMessage"]
    lines = [head]
    stack = error.get("stackTrace")
    if stack is not None:
        lines.append("Traceback (most recent call last):")
        for element in stack:
            if element == "":
                lines.append("")
            else:
                lines.extend(_nbsp_indent(line) for line in element.splitlines())
    log_sink.log_error(lines)
