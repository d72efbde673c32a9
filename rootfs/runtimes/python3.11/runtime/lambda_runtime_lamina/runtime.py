"""The runtime: sys.path as on Lambda, handler loading (Init), the invoke loop.

Init errors are posted to /runtime/init/error (with the error-type header) and
the process exits 1 before any /next; handler errors go to /invocation/<id>/error
with awslambdaric's body {"errorMessage","errorType","requestId","stackTrace"}.
"""

import importlib
import json
import logging
import os
import site
import sys
import traceback

from . import logs
from .codec import FaultException, marshal_result, to_json, unmarshal_event
from .context import LambdaContext
from .rapid import RuntimeClient

_PACKAGE_DIR = os.path.dirname(os.path.realpath(__file__))
RUNTIME_DIR = os.path.dirname(_PACKAGE_DIR)
OPT_PYTHON = "/opt/python"

UNHANDLED_WARNING = (
    "LAMBDA_WARNING: "
    "Unhandled exception. "
    "The most likely cause is an issue in the function code. "
    "However, in rare cases, a Lambda runtime update can cause unexpected function behavior. "
    "For functions using managed runtimes, runtime updates can be triggered by a function "
    "change, or can be applied automatically. "
    "To determine if the runtime has been updated, check the runtime version in the "
    "INIT_START log entry. "
    "If this error correlates with a change in the runtime version, you may be able to "
    "mitigate this error by temporarily rolling back to the previous runtime version. "
    "For more information, see https://docs.aws.amazon.com/lambda/latest/dg/runtimes-update.html\r"
)


def setup_sys_path():
    """sys.path and PYTHONPATH as Lambda's python3.x bootstrap sets them:
    [task root, /opt/python/lib/pythonX.Y/site-packages, /opt/python, <runtime dir>,
    stdlib..., site-packages..., then the site dirs again unless they exist]; .pth
    files in the task root and the layer dirs are processed. A function that sets
    PYTHONPATH itself gets no /opt entries (its PYTHONPATH entries instead)."""
    task_root = os.environ.get("LAMBDA_TASK_ROOT") or "/var/task"
    os.environ["LAMBDA_TASK_ROOT"] = task_root
    os.environ.setdefault("LAMBDA_RUNTIME_DIR", RUNTIME_DIR)
    user_pythonpath = "PYTHONPATH" in os.environ
    opt_site = "%s/lib/python%d.%d/site-packages" % ((OPT_PYTHON,) + sys.version_info[:2])
    if not user_pythonpath:
        sys.path[0:0] = [opt_site, OPT_PYTHON]
    sys.path.insert(0, task_root)
    site.addsitedir(task_root)
    if not user_pythonpath:
        site.addsitedir(opt_site)
        site.addsitedir(OPT_PYTHON)
        os.environ["PYTHONPATH"] = os.environ["LAMBDA_RUNTIME_DIR"]


class Unbuffered(object):
    """stdout/stderr flushed on every write, so print() output streams out."""

    def __init__(self, stream):
        self.stream = stream

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def __getattr__(self, attr):
        return getattr(self.stream, attr)

    def write(self, msg):
        n = self.stream.write(msg)
        self.stream.flush()
        return n

    def writelines(self, msgs):
        self.stream.writelines(msgs)
        self.stream.flush()


def load_handler(handler):
    try:
        modname, fname = handler.rsplit(".", 1)
    except ValueError as e:
        raise FaultException(
            FaultException.MALFORMED_HANDLER_NAME, "Bad handler '{}': {}".format(handler, e)
        )
    try:
        if modname.split(".")[0] in sys.builtin_module_names:
            raise FaultException(
                FaultException.BUILT_IN_MODULE_CONFLICT,
                "Cannot use built-in module {} as a handler module".format(modname),
            )
        module = importlib.import_module(modname.replace("/", "."))
    except ImportError as e:
        raise FaultException(
            FaultException.IMPORT_MODULE_ERROR,
            "Unable to import module '{}': {}".format(modname, e),
        )
    except SyntaxError as e:
        trace = ['  File "%s" Line %s\n    %s' % (e.filename, e.lineno, e.text)]
        raise FaultException(
            FaultException.USER_CODE_SYNTAX_ERROR,
            "Syntax error in module '{}': {}".format(modname, e),
            trace,
        )
    try:
        return getattr(module, fname)
    except AttributeError:
        raise FaultException(
            FaultException.HANDLER_NOT_FOUND,
            "Handler '{}' missing on module '{}'".format(fname, modname),
        )


def make_error(error_message, error_type, stack_trace, invoke_id=None):
    return {
        "errorMessage": error_message or "",
        "errorType": error_type or "",
        "requestId": invoke_id if invoke_id is not None else "",
        "stackTrace": stack_trace or [],
    }


def _is_runtime_file(filename):
    path = os.path.realpath(filename)
    return path.startswith(_PACKAGE_DIR + os.sep) or os.path.dirname(path) == RUNTIME_DIR


def user_frames(tb):
    """(file, line, function, code) of a traceback, from the first frame that is
    not the runtime's (so an error at import starts at importlib.import_module)."""
    frames = [(f.filename, f.lineno, f.name, f.line) for f in traceback.extract_tb(tb)]
    for i, frame in enumerate(frames):
        if not _is_runtime_file(frame[0]):
            return frames[i:]
    return frames


def xray_fault(error_type, message, frames):
    return json.dumps(
        {
            "working_directory": os.getcwd(),
            "exceptions": [
                {
                    "message": message,
                    "type": error_type,
                    "stack": [{"label": f[2], "path": f[0], "line": f[1]} for f in frames],
                }
            ],
            "paths": list({f[0] for f in frames}),
        }
    )


def _parse_json_header(value, name):
    try:
        return json.loads(value)
    except Exception as e:
        raise FaultException(
            FaultException.LAMBDA_CONTEXT_UNMARSHAL_ERROR,
            "Unable to parse {} JSON: {}".format(name, e),
        )


def create_context(inv):
    client_context = None
    if inv.client_context:
        client_context = _parse_json_header(inv.client_context, "Client Context")
    cognito_identity = None
    if inv.cognito_identity:
        cognito_identity = _parse_json_header(inv.cognito_identity, "Cognito Identity")
    return LambdaContext(
        inv.invoke_id,
        client_context,
        cognito_identity,
        inv.deadline_time_in_ms,
        inv.invoked_function_arn,
        inv.tenant_id,
    )


def handle_invocation(client, request_handler, inv, log_sink):
    error = None
    try:
        context = create_context(inv)
        event = unmarshal_event(inv.event_body, inv.content_type)
        result = request_handler(event, context)
        payload, content_type = marshal_result(result)
    except FaultException as e:
        cause = xray_fault("LambdaValidationError", e.msg, [])
        error = make_error(e.msg, e.exception_type, e.trace, inv.invoke_id)
    except Exception as e:
        frames = user_frames(e.__traceback__)
        cause = xray_fault(type(e).__name__, str(e), frames)
        error = make_error(str(e), type(e).__name__, traceback.format_list(frames), inv.invoke_id)
    if error is not None:
        logs.log_error(error, log_sink, to_json)
        client.post_invocation_error(inv.invoke_id, to_json(error), cause)
    else:
        client.post_invocation_result(inv.invoke_id, payload, content_type)


def update_xray_env(trace_id):
    if trace_id is not None:
        os.environ["_X_AMZN_TRACE_ID"] = trace_id
    else:
        os.environ.pop("_X_AMZN_TRACE_ID", None)


def main():
    setup_sys_path()
    client = RuntimeClient(os.environ["AWS_LAMBDA_RUNTIME_API"])
    handler_name = os.environ.get("_HANDLER", "")
    sys.stdout = Unbuffered(sys.stdout)
    sys.stderr = Unbuffered(sys.stderr)

    with logs.create_sink() as log_sink:
        error = None
        try:
            logs.setup_logging(log_sink)
            request_handler = load_handler(handler_name)
        except FaultException as e:
            error = make_error(e.msg, e.exception_type, e.trace)
        except Exception as e:
            error = make_error(
                str(e), type(e).__name__, traceback.format_list(user_frames(e.__traceback__))
            )
        if error is not None:
            logging.warning(UNHANDLED_WARNING)
            logs.log_error(error, log_sink, to_json)
            client.post_init_error(to_json(error), error["errorType"])
            sys.exit(1)

        while True:
            inv = client.next()
            logs.request_id = inv.invoke_id
            logs.tenant_id = inv.tenant_id
            update_xray_env(inv.x_amzn_trace_id)
            handle_invocation(client, request_handler, inv, log_sink)
