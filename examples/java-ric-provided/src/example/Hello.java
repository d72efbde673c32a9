package example;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import java.util.LinkedHashMap;
import java.util.Map;

/** A RequestHandler run by AWS's Java RIC that the function's own bootstrap starts. */
public class Hello implements RequestHandler<Map<String, String>, Map<String, String>> {
    @Override
    public Map<String, String> handleRequest(Map<String, String> event, Context context) {
        Map<String, String> out = new LinkedHashMap<>();
        out.put("greeting", "hello " + event.getOrDefault("name", "world"));
        out.put("function", context.getFunctionName());
        return out;
    }
}
