"""The demo function: a Lambda-style Python handler."""
import os
import platform


def handler(event, context):
    print(f"hello from {context.function_name} ({context.aws_request_id})")
    return {
        "message": f"Hello, {event.get('name', 'world')}!",
        "function": context.function_name,
        "memory_mb": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "python": platform.python_version(),
        "uid": os.getuid(),
    }
