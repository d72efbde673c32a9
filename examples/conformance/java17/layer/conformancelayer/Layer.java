package conformancelayer;

/** Code of the java17 conformance layer: a jar at /opt/java/lib, on the RIC's customer class path. */
public final class Layer {
    private Layer() {}

    public static String hello() {
        return "layer:java17";
    }
}
