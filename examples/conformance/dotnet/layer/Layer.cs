// Code of the dotnet conformance layer: ConformanceLayer.dll at /opt/dotnet/lib, where lamina's dotnet
// runtime looks for assemblies the function references and does not carry.
namespace ConformanceLayer
{
    public static class Layer
    {
        public static string Hello()
        {
            return "layer:dotnet";
        }
    }
}
