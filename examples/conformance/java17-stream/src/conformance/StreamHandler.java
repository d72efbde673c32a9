package conformance;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestStreamHandler;
import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonNull;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import com.google.gson.JsonPrimitive;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;

/** lamina's conformance function for java17 as a RequestStreamHandler: raw bytes in and out, JSON
 *  through Gson (from the ZIP's lib/, on the RIC's customer class path). */
public class StreamHandler implements RequestStreamHandler {
    private static final Path TMP = Path.of("/tmp/conformance.txt");
    private static final Gson GSON = new GsonBuilder().serializeNulls().create();

    @Override
    public void handleRequest(InputStream input, OutputStream output, Context context) throws IOException {
        JsonObject event = JsonParser.parseReader(new InputStreamReader(input, StandardCharsets.UTF_8)).getAsJsonObject();
        JsonElement result = handle(event, context);
        output.write(GSON.toJson(result).getBytes(StandardCharsets.UTF_8));
    }

    private static JsonElement handle(JsonObject event, Context context) throws IOException {
        String op = event.has("op") ? event.get("op").getAsString() : "";
        switch (op) {
            case "echo":
                return event.has("data") ? event.get("data") : JsonNull.INSTANCE;
            case "context": {
                JsonObject out = new JsonObject();
                out.addProperty("request_id", context.getAwsRequestId());
                out.addProperty("function_name", context.getFunctionName());
                out.addProperty("function_version", context.getFunctionVersion());
                out.addProperty("invoked_function_arn", context.getInvokedFunctionArn());
                out.addProperty("memory_limit_in_mb", context.getMemoryLimitInMB());
                out.addProperty("remaining_time_ms", context.getRemainingTimeInMillis());
                out.addProperty("log_group_name", context.getLogGroupName());
                out.addProperty("log_stream_name", context.getLogStreamName());
                return out;
            }
            case "env": {
                JsonObject out = new JsonObject();
                for (JsonElement name : event.getAsJsonArray("names")) {
                    String v = System.getenv(name.getAsString());
                    out.add(name.getAsString(), v == null ? JsonNull.INSTANCE : new JsonPrimitive(v));
                }
                return out;
            }
            case "error":
                throw new RuntimeException(event.get("message").getAsString());
            case "sleep":
                try {
                    Thread.sleep(event.get("ms").getAsLong());
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                return new JsonPrimitive("slept");
            case "print": {
                String text = event.get("text").getAsString();
                System.out.println(text);
                System.out.flush();
                System.err.println(text);
                System.err.flush();
                return new JsonPrimitive("printed");
            }
            case "tmp_write":
                Files.writeString(TMP, event.get("data").getAsString(), StandardCharsets.UTF_8);
                return new JsonPrimitive("written");
            case "tmp_read":
                try {
                    return new JsonPrimitive(Files.readString(TMP, StandardCharsets.UTF_8));
                } catch (NoSuchFileException e) {
                    return JsonNull.INSTANCE;
                }
            case "layer":
                return new JsonPrimitive(conformancelayer.Layer.hello());
            default:
                throw new IllegalArgumentException("unknown op: " + op);
        }
    }
}
