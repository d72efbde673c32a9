package conformance;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** lamina's conformance function for java17: a RequestHandler whose event the RIC deserializes to a Map. */
public class Handler implements RequestHandler<Map<String, Object>, Object> {
    private static final Path TMP = Path.of("/tmp/conformance.txt");

    @Override
    public Object handleRequest(Map<String, Object> event, Context context) {
        String op = String.valueOf(event.get("op"));
        switch (op) {
            case "echo":
                return event.get("data");
            case "context": {
                Map<String, Object> out = new LinkedHashMap<>();
                out.put("request_id", context.getAwsRequestId());
                out.put("function_name", context.getFunctionName());
                out.put("function_version", context.getFunctionVersion());
                out.put("invoked_function_arn", context.getInvokedFunctionArn());
                out.put("memory_limit_in_mb", context.getMemoryLimitInMB());
                out.put("remaining_time_ms", context.getRemainingTimeInMillis());
                out.put("log_group_name", context.getLogGroupName());
                out.put("log_stream_name", context.getLogStreamName());
                return out;
            }
            case "env": {
                Map<String, Object> out = new LinkedHashMap<>();
                for (Object name : (List<?>) event.get("names")) {
                    out.put(String.valueOf(name), System.getenv(String.valueOf(name)));
                }
                return out;
            }
            case "error":
                throw new RuntimeException(String.valueOf(event.get("message")));
            case "sleep":
                try {
                    Thread.sleep(((Number) event.get("ms")).longValue());
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                return "slept";
            case "print": {
                String text = String.valueOf(event.get("text"));
                System.out.println(text);
                System.out.flush();
                System.err.println(text);
                System.err.flush();
                return "printed";
            }
            case "tmp_write":
                try {
                    Files.writeString(TMP, String.valueOf(event.get("data")), StandardCharsets.UTF_8);
                } catch (IOException e) {
                    throw new RuntimeException(e);
                }
                return "written";
            case "tmp_read":
                try {
                    return Files.readString(TMP, StandardCharsets.UTF_8);
                } catch (NoSuchFileException e) {
                    return null;
                } catch (IOException e) {
                    throw new RuntimeException(e);
                }
            case "layer":
                return conformancelayer.Layer.hello();
            default:
                throw new IllegalArgumentException("unknown op: " + op);
        }
    }
}
