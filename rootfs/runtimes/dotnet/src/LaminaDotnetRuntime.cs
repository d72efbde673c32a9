// lamina's .NET runtime (C#, on Mono): the Lambda Runtime API loop (2018-06-01) for a function
// handler `Assembly::Namespace.Class::Method` whose assembly is /var/task/Assembly.dll.
//
// - Handler methods take (), (input) or (input, ILambdaContext); input and output are System.IO.Stream
//   (raw bytes) or any type the serializer handles; Task and Task<T> results are awaited.
// - Serializer: the [LambdaSerializer] of the method or of the assembly if there is one; otherwise
//   lamina's default, Mono's System.Web.Script.Serialization.JavaScriptSerializer (JSON objects become
//   Dictionary<string, object>, arrays object[], numbers int/long/decimal).
// - Assemblies the function references are looked up in /var/task, then in /opt/dotnet/lib (layers).
// - Errors are reported in the shape of AWS's .NET runtime (RuntimeSupport): errorType (the exception's
//   class name), errorMessage, stackTrace (the trace's lines, trimmed) and cause for inner exceptions.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Net;
using System.Reflection;
using System.Text;
using System.Threading.Tasks;
using System.Web.Script.Serialization;
using Amazon.Lambda.Core;

namespace Lamina.Runtime
{
    /// <summary>A handler string, assembly, type or method that cannot be used.</summary>
    public class LambdaValidationException : Exception
    {
        public LambdaValidationException(string message) : base(message) { }
        public LambdaValidationException(string message, Exception inner) : base(message, inner) { }
    }

    /// <summary>What user code threw (constructor, handler, serializer), unwrapped from reflection.</summary>
    class UserCodeException : Exception
    {
        public readonly Exception Thrown;
        public UserCodeException(Exception thrown) : base(thrown.Message) { Thrown = thrown; }
    }

    /// <summary>lamina's default serializer: JSON through Mono's JavaScriptSerializer.</summary>
    public class JavaScriptLambdaSerializer : ILambdaSerializer
    {
        private readonly JavaScriptSerializer json = new JavaScriptSerializer { MaxJsonLength = int.MaxValue, RecursionLimit = 1000 };

        public T Deserialize<T>(Stream requestStream)
        {
            string text = new StreamReader(requestStream, new UTF8Encoding(false)).ReadToEnd();
            if (typeof(T) == typeof(object))
                return (T)json.DeserializeObject(text);
            return json.Deserialize<T>(text);
        }

        public void Serialize<T>(T response, Stream responseStream)
        {
            byte[] b = new UTF8Encoding(false).GetBytes(json.Serialize(response));
            responseStream.Write(b, 0, b.Length);
        }
    }

    class Logger : ILambdaLogger
    {
        public void Log(string message) { Console.Write(message); }
        public void LogLine(string message) { Console.WriteLine(message); }
    }

    class CognitoIdentity : ICognitoIdentity
    {
        public string IdentityId { get; set; }
        public string IdentityPoolId { get; set; }
    }

    class ClientApplication : IClientApplication
    {
        public string AppPackageName { get; set; }
        public string AppTitle { get; set; }
        public string AppVersionCode { get; set; }
        public string AppVersionName { get; set; }
        public string InstallationId { get; set; }
    }

    class ClientContext : IClientContext
    {
        public IDictionary<string, string> Environment { get; set; }
        public IClientApplication Client { get; set; }
        public IDictionary<string, string> Custom { get; set; }
    }

    class Context : ILambdaContext
    {
        public string AwsRequestId { get; set; }
        public IClientContext ClientContext { get; set; }
        public string FunctionName { get; set; }
        public string FunctionVersion { get; set; }
        public ICognitoIdentity Identity { get; set; }
        public string InvokedFunctionArn { get; set; }
        public ILambdaLogger Logger { get; set; }
        public string LogGroupName { get; set; }
        public string LogStreamName { get; set; }
        public int MemoryLimitInMB { get; set; }
        public long DeadlineMs { get; set; }

        public TimeSpan RemainingTime
        {
            get
            {
                long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
                return TimeSpan.FromMilliseconds(Math.Max(0, DeadlineMs - now));
            }
        }
    }

    class Invocation
    {
        public string RequestId;
        public byte[] Body;
        public WebHeaderCollection Headers;
    }

    /// <summary>The Runtime API client.</summary>
    class RuntimeApi
    {
        private readonly string baseUrl;

        public RuntimeApi(string address)
        {
            baseUrl = "http://" + address + "/2018-06-01/runtime/";
        }

        public Invocation Next()
        {
            var req = (HttpWebRequest)WebRequest.Create(baseUrl + "invocation/next");
            req.Method = "GET";
            req.Timeout = System.Threading.Timeout.Infinite;
            req.ReadWriteTimeout = System.Threading.Timeout.Infinite;
            req.Proxy = null;
            using (var resp = (HttpWebResponse)req.GetResponse())
            using (var s = resp.GetResponseStream())
            {
                var ms = new MemoryStream();
                s.CopyTo(ms);
                return new Invocation
                {
                    RequestId = resp.Headers["Lambda-Runtime-Aws-Request-Id"],
                    Body = ms.ToArray(),
                    Headers = resp.Headers,
                };
            }
        }

        public void Post(string path, byte[] body, string errorType)
        {
            var req = (HttpWebRequest)WebRequest.Create(baseUrl + path);
            req.Method = "POST";
            req.Proxy = null;
            req.Timeout = System.Threading.Timeout.Infinite;
            req.ContentType = "application/json";
            if (errorType != null)
                req.Headers["Lambda-Runtime-Function-Error-Type"] = errorType;
            req.ContentLength = body.Length;
            using (var s = req.GetRequestStream())
                s.Write(body, 0, body.Length);
            try
            {
                using (var resp = (HttpWebResponse)req.GetResponse()) { }
            }
            catch (WebException e) when (e.Response != null)
            {
                // 4xx from the Runtime API (e.g. a response over 6 MB): Lambda reports it; keep looping.
                var status = ((HttpWebResponse)e.Response).StatusCode;
                e.Response.Close();
                Console.Error.WriteLine("lamina dotnet runtime: POST " + path + " answered " + (int)status);
            }
        }
    }

    static class ErrorJson
    {
        public static string Escape(string s)
        {
            var b = new StringBuilder();
            foreach (char c in s ?? "")
            {
                switch (c)
                {
                    case '"': b.Append("\\\""); break;
                    case '\\': b.Append("\\\\"); break;
                    case '\n': b.Append("\\n"); break;
                    case '\r': b.Append("\\r"); break;
                    case '\t': b.Append("\\t"); break;
                    default:
                        if (c < 0x20) b.AppendFormat("\\u{0:x4}", (int)c);
                        else b.Append(c);
                        break;
                }
            }
            return b.ToString();
        }

        static IEnumerable<string> TraceLines(Exception e)
        {
            string trace = e.StackTrace;
            if (string.IsNullOrEmpty(trace))
                return new string[0];
            // The frames below the handler are the runtime's reflection call, not the function's.
            return trace.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0)
                .TakeWhile(l => !l.StartsWith("at (wrapper managed-to-native) System.Reflection.", StringComparison.Ordinal));
        }

        /// <summary>The .NET runtime's error document for an exception and its inner ones.</summary>
        public static string Write(Exception e)
        {
            var b = new StringBuilder();
            Append(b, e, 0);
            // Lambda's limit for an error document; like RuntimeSupport, keep the message only.
            if (Encoding.UTF8.GetByteCount(b.ToString()) > 256 * 1024)
                return "{\"errorMessage\": \"Exception exceeded maximum payload size of 256KB.\"}";
            return b.ToString();
        }

        static void Append(StringBuilder b, Exception e, int depth)
        {
            b.Append("{\"errorType\": \"").Append(Escape(e.GetType().Name)).Append('"');
            b.Append(", \"errorMessage\": \"").Append(Escape(e.Message)).Append('"');
            var lines = TraceLines(e).ToList();
            if (lines.Count > 0)
                b.Append(", \"stackTrace\": [").Append(string.Join(", ", lines.Select(l => "\"" + Escape(l) + "\""))).Append(']');
            var agg = e as AggregateException;
            if (e.InnerException != null && depth < 32)
            {
                b.Append(", \"cause\": ");
                Append(b, e.InnerException, depth + 1);
            }
            if (agg != null && agg.InnerExceptions.Count > 0 && depth < 32)
            {
                b.Append(", \"causes\": [");
                for (int i = 0; i < agg.InnerExceptions.Count; i++)
                {
                    if (i > 0) b.Append(", ");
                    Append(b, agg.InnerExceptions[i], depth + 1);
                }
                b.Append(']');
            }
            b.Append('}');
        }
    }

    /// <summary>The function's handler, resolved once at init.</summary>
    class Handler
    {
        static readonly string[] ProbeDirs = { "/var/task", "/opt/dotnet/lib" };
        const string Format = "The valid format is 'ASSEMBLY::TYPE::METHOD'.";

        MethodInfo method;
        object instance;
        Type inputType;
        bool takesContext;
        Type outputType;
        ILambdaSerializer serializer;

        static Assembly Resolve(object sender, ResolveEventArgs args)
        {
            string name = new AssemblyName(args.Name).Name;
            foreach (string dir in ProbeDirs)
            {
                string p = Path.Combine(dir, name + ".dll");
                if (File.Exists(p))
                    return Assembly.LoadFrom(p);
            }
            return null;
        }

        public static Handler Load(string handler)
        {
            AppDomain.CurrentDomain.AssemblyResolve += Resolve;
            if (string.IsNullOrEmpty(handler))
                throw new LambdaValidationException("Empty lambda function handler. " + Format);
            string[] parts = handler.Split(new[] { "::" }, StringSplitOptions.None);
            if (parts.Length != 3)
                throw new LambdaValidationException("Invalid lambda function handler: '" + handler + "'. " + Format);
            if (parts[0].Length == 0)
                throw new LambdaValidationException("Invalid lambda function handler: '" + handler + "', the assembly is missing. " + Format);
            if (parts[1].Length == 0)
                throw new LambdaValidationException("Invalid lambda function handler: '" + handler + "', the type is missing. " + Format);
            if (parts[2].Length == 0)
                throw new LambdaValidationException("Invalid lambda function handler: '" + handler + "', the method is missing. " + Format);
            string asmName = parts[0], typeName = parts[1], methodName = parts[2];
            if (asmName.IndexOfAny(new[] { '/', '\\' }) >= 0 || asmName == "." || asmName == "..")
                throw new LambdaValidationException("Invalid lambda function handler: '" + handler + "'. " + Format);
            string path = Path.Combine("/var/task", asmName + ".dll");
            if (!File.Exists(path))
                throw new LambdaValidationException("Could not find the specified handler assembly with the file name '" + asmName + "'. The assembly should be located in the root of your uploaded .zip file.");
            Assembly asm;
            try
            {
                asm = Assembly.LoadFrom(path);
            }
            catch (Exception e)
            {
                throw new LambdaValidationException("Unable to load assembly '" + asmName + "'.", e);
            }
            Type type;
            try
            {
                type = asm.GetType(typeName, false);
            }
            catch (Exception e)
            {
                throw new LambdaValidationException("Unable to load type '" + typeName + "' from assembly '" + asmName + "'.", e);
            }
            if (type == null)
                throw new LambdaValidationException("Unable to load type '" + typeName + "' from assembly '" + asmName + "'.");
            if (type.IsGenericTypeDefinition)
                throw new LambdaValidationException("The type '" + typeName + "' cannot be used as a Lambda Handler type because it is generic.");
            var flags = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
            var candidates = new List<MethodInfo>();
            for (Type t = type; t != null && t != typeof(object); t = t.BaseType)
                candidates.AddRange(t.GetMethods(flags).Where(m => m.Name == methodName && !m.IsPrivate));
            if (candidates.Count == 0)
                throw new LambdaValidationException("Unable to find method '" + methodName + "' in type '" + typeName + "' from assembly '" + asmName + "': Found no methods matching method name '" + methodName + "'.");
            if (candidates.Count > 1)
                throw new LambdaValidationException("The method '" + methodName + "' in type '" + typeName + "' appears to have a number of overloads. Possible candidates are:\n" + string.Join("\n", candidates.Select(c => c.ToString())) + ".");
            var h = new Handler { method = candidates[0] };
            var ps = h.method.GetParameters();
            if (h.method.IsGenericMethodDefinition)
                throw new LambdaValidationException("The method '" + methodName + "' cannot be used as a Lambda Handler because it is a generic method.");
            if (ps.Length > 2)
                throw new LambdaValidationException("Method '" + methodName + "' of type '" + typeName + "' is not supported: the method has more than 2 parameters.");
            if (ps.Length == 2 && ps[1].ParameterType != typeof(ILambdaContext))
                throw new LambdaValidationException("Method '" + methodName + "' of type '" + typeName + "' is not supported: the method has 2 parameters, but the second parameter is not of type 'Amazon.Lambda.Core.ILambdaContext'.");
            if (ps.Length >= 1)
                h.inputType = ps[0].ParameterType;
            h.takesContext = ps.Length == 2;
            Type ret = h.method.ReturnType;
            if (ret == typeof(Task))
                h.outputType = null;
            else if (ret.IsGenericType && ret.GetGenericTypeDefinition() == typeof(Task<>))
                h.outputType = ret.GetGenericArguments()[0];
            else if (ret == typeof(void))
                h.outputType = null;
            else
                h.outputType = ret;
            var attr = (LambdaSerializerAttribute)h.method.GetCustomAttributes(typeof(LambdaSerializerAttribute), false).FirstOrDefault()
                       ?? (LambdaSerializerAttribute)asm.GetCustomAttributes(typeof(LambdaSerializerAttribute), false).FirstOrDefault();
            if (attr != null)
            {
                if (attr.SerializerType == null)
                    throw new LambdaValidationException("The 'SerializerType' property on attribute class 'LambdaSerializerAttribute' is not set.");
                if (!typeof(ILambdaSerializer).IsAssignableFrom(attr.SerializerType))
                    throw new LambdaValidationException("The '" + attr.SerializerType.FullName + "' class is invalid: it does not implement the 'ILambdaSerializer' interface.");
                h.serializer = (ILambdaSerializer)Unwrap(() => Activator.CreateInstance(attr.SerializerType));
            }
            else
            {
                h.serializer = new JavaScriptLambdaSerializer();
            }
            if (!h.method.IsStatic)
            {
                if (type.IsAbstract)
                    throw new LambdaValidationException("The instance method '" + methodName + "' cannot be used as a Lambda Handler because its type '" + typeName + "' is abstract.");
                // The constructor runs at init, as in Lambda; what it throws is an init error.
                h.instance = Unwrap(() => Activator.CreateInstance(type, true));
            }
            return h;
        }

        /// <summary>Runs f and rethrows what user code threw, not the reflection wrapper.</summary>
        static object Unwrap(Func<object> f)
        {
            try
            {
                return f();
            }
            catch (TargetInvocationException e) when (e.InnerException != null)
            {
                // The inner exception keeps its own trace: from the throw up to the handler's frame.
                throw new UserCodeException(e.InnerException);
            }
        }

        public byte[] Invoke(byte[] body, ILambdaContext ctx)
        {
            var args = new List<object>();
            if (inputType != null)
            {
                if (inputType == typeof(Stream) || inputType == typeof(MemoryStream))
                    args.Add(new MemoryStream(body, false));
                else
                {
                    var d = typeof(ILambdaSerializer).GetMethod("Deserialize").MakeGenericMethod(inputType);
                    args.Add(Unwrap(() => d.Invoke(serializer, new object[] { new MemoryStream(body, false) })));
                }
            }
            if (takesContext)
                args.Add(ctx);
            object result = Unwrap(() => method.Invoke(instance, args.ToArray()));
            var task = result as Task;
            if (task != null)
            {
                task.GetAwaiter().GetResult();
                result = outputType == null ? null : task.GetType().GetProperty("Result").GetValue(task);
            }
            if (outputType == null)
                return new byte[0];
            var stream = result as Stream;
            if (stream != null)
            {
                var ms = new MemoryStream();
                stream.CopyTo(ms);
                return ms.ToArray();
            }
            var output = new MemoryStream();
            var s = typeof(ILambdaSerializer).GetMethod("Serialize").MakeGenericMethod(outputType);
            Unwrap(() => s.Invoke(serializer, new object[] { result, output }));
            return output.ToArray();
        }
    }

    public static class Program
    {
        static string Env(string name)
        {
            return Environment.GetEnvironmentVariable(name);
        }

        static Dictionary<string, object> ParseObject(string json)
        {
            if (string.IsNullOrEmpty(json))
                return null;
            try
            {
                return new JavaScriptSerializer().DeserializeObject(json) as Dictionary<string, object>;
            }
            catch (Exception)
            {
                return null;
            }
        }

        static string Str(Dictionary<string, object> d, string key)
        {
            object v;
            return d != null && d.TryGetValue(key, out v) && v != null ? v.ToString() : null;
        }

        static IDictionary<string, string> StrMap(Dictionary<string, object> d, string key)
        {
            object v;
            var m = new Dictionary<string, string>();
            if (d != null && d.TryGetValue(key, out v) && v is Dictionary<string, object>)
                foreach (var kv in (Dictionary<string, object>)v)
                    m[kv.Key] = kv.Value == null ? null : kv.Value.ToString();
            return m;
        }

        static Context MakeContext(Invocation inv, ILambdaLogger logger, int memory)
        {
            long deadline;
            long.TryParse(inv.Headers["Lambda-Runtime-Deadline-Ms"], out deadline);
            var ctx = new Context
            {
                AwsRequestId = inv.RequestId,
                FunctionName = Env("AWS_LAMBDA_FUNCTION_NAME"),
                FunctionVersion = Env("AWS_LAMBDA_FUNCTION_VERSION"),
                InvokedFunctionArn = inv.Headers["Lambda-Runtime-Invoked-Function-Arn"],
                LogGroupName = Env("AWS_LAMBDA_LOG_GROUP_NAME"),
                LogStreamName = Env("AWS_LAMBDA_LOG_STREAM_NAME"),
                MemoryLimitInMB = memory,
                DeadlineMs = deadline,
                Logger = logger,
            };
            var identity = ParseObject(inv.Headers["Lambda-Runtime-Cognito-Identity"]);
            if (identity != null)
                ctx.Identity = new CognitoIdentity
                {
                    IdentityId = Str(identity, "cognitoIdentityId"),
                    IdentityPoolId = Str(identity, "cognitoIdentityPoolId"),
                };
            var cc = ParseObject(inv.Headers["Lambda-Runtime-Client-Context"]);
            if (cc != null)
            {
                object client;
                cc.TryGetValue("client", out client);
                var c = client as Dictionary<string, object>;
                ctx.ClientContext = new ClientContext
                {
                    Client = c == null ? null : new ClientApplication
                    {
                        InstallationId = Str(c, "installation_id"),
                        AppTitle = Str(c, "app_title"),
                        AppVersionName = Str(c, "app_version_name"),
                        AppVersionCode = Str(c, "app_version_code"),
                        AppPackageName = Str(c, "app_package_name"),
                    },
                    Custom = StrMap(cc, "custom"),
                    Environment = StrMap(cc, "env"),
                };
            }
            return ctx;
        }

        public static int Main(string[] argv)
        {
            string address = Env("AWS_LAMBDA_RUNTIME_API");
            if (string.IsNullOrEmpty(address))
            {
                Console.Error.WriteLine("lamina dotnet runtime: AWS_LAMBDA_RUNTIME_API is not set");
                return 2;
            }
            var api = new RuntimeApi(address);
            string handlerName = argv.Length > 0 ? argv[0] : Env("_HANDLER");
            var logger = new Logger();
            int memory;
            int.TryParse(Env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"), out memory);
            Handler handler;
            try
            {
                handler = Handler.Load(handlerName);
            }
            catch (Exception caught)
            {
                Exception e = caught is UserCodeException ? ((UserCodeException)caught).Thrown : caught;
                string doc = ErrorJson.Write(e);
                Console.Error.WriteLine(doc);
                api.Post("init/error", Encoding.UTF8.GetBytes(doc), "Runtime." + e.GetType().Name);
                return 1;
            }
            while (true)
            {
                Invocation inv = api.Next();
                string trace = inv.Headers["Lambda-Runtime-Trace-Id"];
                Environment.SetEnvironmentVariable("_X_AMZN_TRACE_ID", trace);
                var ctx = MakeContext(inv, logger, memory);
                byte[] response;
                try
                {
                    response = handler.Invoke(inv.Body, ctx);
                }
                catch (Exception caught)
                {
                    Exception e = caught is UserCodeException ? ((UserCodeException)caught).Thrown : caught;
                    string doc = ErrorJson.Write(e);
                    Console.Error.WriteLine(doc);
                    api.Post("invocation/" + inv.RequestId + "/error", Encoding.UTF8.GetBytes(doc), e.GetType().Name);
                    if (e is OutOfMemoryException || e is StackOverflowException)
                        return 1;
                    continue;
                }
                api.Post("invocation/" + inv.RequestId + "/response", response, null);
            }
        }
    }
}
