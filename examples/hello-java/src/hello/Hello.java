package hello;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import java.util.Map;

/** The demo's Java function (runtime java17, handler hello.Hello::handleRequest). */
public class Hello implements RequestHandler<Map<String, Object>, String> {
    @Override
    public String handleRequest(Map<String, Object> event, Context context) {
        context.getLogger().log("hello from " + context.getFunctionName());
        return "Hello, " + event.getOrDefault("name", "world") + "! (java " + System.getProperty("java.version") + ")";
    }
}
