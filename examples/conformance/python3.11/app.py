"""lamina's runtime conformance function for Python (examples/conformance/README.md)."""
import os
import sys
import time


def handler(event, context):
    op = event.get("op")
    if op == "echo":
        return event.get("data")
    if op == "context":
        return {
            "request_id": context.aws_request_id,
            "function_name": context.function_name,
            "function_version": context.function_version,
            "invoked_function_arn": context.invoked_function_arn,
            "memory_limit_in_mb": int(context.memory_limit_in_mb),
            "remaining_time_ms": context.get_remaining_time_in_millis(),
            "log_group_name": context.log_group_name,
            "log_stream_name": context.log_stream_name,
        }
    if op == "env":
        return {n: os.environ.get(n) for n in event["names"]}
    if op == "error":
        raise Exception(event["message"])
    if op == "sleep":
        time.sleep(event["ms"] / 1000)
        return "slept"
    if op == "print":
        print(event["text"], flush=True)
        print(event["text"], file=sys.stderr, flush=True)
        return "printed"
    if op == "tmp_write":
        with open("/tmp/conformance.txt", "w") as f:
            f.write(event["data"])
        return "written"
    if op == "tmp_read":
        try:
            with open("/tmp/conformance.txt") as f:
                return f.read()
        except FileNotFoundError:
            return None
    if op == "layer":
        import lamina_layer

        return lamina_layer.hello()
    raise ValueError("unknown op %r" % op)
