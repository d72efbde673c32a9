# frozen_string_literal: true

# lamina's Ruby runtime (ruby3.1): the loop between the Runtime API (2018-06-01) and the
# function's handler, following Lambda's Ruby conventions:
# - _HANDLER is `file.method` (a top-level method of file.rb under LAMBDA_TASK_ROOT) or
#   `file.Module::Class.method` (a class method); it is called as
#   `handler(event: event, context: context)`.
# - A handler error is reported as {"errorMessage", "errorType": "Function<Class>",
#   "stackTrace": backtrace}; an Init failure (load error, syntax error, missing method) as
#   "Init<Class>" through /runtime/init/error, and the runtime exits.
# - $stdout/$stderr are unbuffered so lines reach the log stream as they are written.
require 'json'
require 'net/http'
require 'time'

$stdout.sync = true
$stderr.sync = true

module LaminaRuntime
  API = ENV.fetch('AWS_LAMBDA_RUNTIME_API', '127.0.0.1:9001')
  HOST, PORT = API.split(':')
  BASE = '/2018-06-01/runtime'
  TASK_ROOT = ENV.fetch('LAMBDA_TASK_ROOT', '/var/task')

  # The context object Lambda's Ruby runtime passes (same attribute names).
  class LambdaContext
    attr_reader :aws_request_id, :invoked_function_arn, :log_group_name, :log_stream_name,
                :function_name, :memory_limit_in_mb, :function_version, :identity,
                :client_context, :deadline_ms

    def initialize(headers)
      @aws_request_id = headers['lambda-runtime-aws-request-id']
      @invoked_function_arn = headers['lambda-runtime-invoked-function-arn']
      @deadline_ms = headers['lambda-runtime-deadline-ms'].to_i
      @log_group_name = ENV['AWS_LAMBDA_LOG_GROUP_NAME']
      @log_stream_name = ENV['AWS_LAMBDA_LOG_STREAM_NAME']
      @function_name = ENV['AWS_LAMBDA_FUNCTION_NAME']
      @memory_limit_in_mb = ENV['AWS_LAMBDA_FUNCTION_MEMORY_SIZE']
      @function_version = ENV['AWS_LAMBDA_FUNCTION_VERSION']
      @identity = parse(headers['lambda-runtime-cognito-identity'])
      @client_context = parse(headers['lambda-runtime-client-context'])
    end

    def get_remaining_time_in_millis
      [@deadline_ms - (Time.now.to_f * 1000).to_i, 0].max
    end

    private

    def parse(text)
      text && !text.empty? ? JSON.parse(text) : nil
    rescue JSON::ParserError
      nil
    end
  end

  class InitError < StandardError
    attr_reader :cause_error

    def initialize(cause_error)
      @cause_error = cause_error
      super(cause_error.message)
    end
  end

  module_function

  def http
    @http ||= begin
      h = Net::HTTP.new(HOST, PORT.to_i)
      h.read_timeout = nil
      h.keep_alive_timeout = 3600
      h.start
      h
    end
  end

  def post(path, body, headers = {})
    req = Net::HTTP::Post.new(BASE + path, { 'Content-Type' => 'application/json' }.merge(headers))
    req.body = body
    http.request(req)
  end

  def error_body(err, prefix)
    {
      'errorMessage' => err.message,
      'errorType' => "#{prefix}<#{err.class}>",
      'stackTrace' => err.backtrace || []
    }
  end

  def load_handler(spec)
    file, rest = spec.to_s.split('.', 2)
    raise ArgumentError, "Invalid handler #{spec}, must be of form FILENAME.METHOD or FILENAME.CLASS.METHOD" if file.to_s.empty? || rest.to_s.empty?

    require File.join(TASK_ROOT, file)
    if rest.include?('.')
      owner_name, method = rest.split('.', 2)
      owner = Object.const_get(owner_name)
      raise NoMethodError, "undefined method `#{method}' for #{owner_name}" unless owner.respond_to?(method)

      owner.method(method)
    else
      raise NoMethodError, "undefined method `#{rest}' for main:Object" unless Object.private_method_defined?(rest) || Object.method_defined?(rest)

      Object.new.method(rest)
    end
  end

  def run
    handler = begin
      load_handler(ENV['_HANDLER'])
    rescue Exception => e # rubocop:disable Lint/RescueException -- SyntaxError, LoadError too
      body = error_body(e, 'Init')
      warn JSON.generate(body)
      post('/init/error', JSON.generate(body), 'Lambda-Runtime-Function-Error-Type' => 'Runtime.Unknown')
      exit!(1)
    end
    loop { invoke_once(handler) }
  end

  def invoke_once(handler)
    res = http.request(Net::HTTP::Get.new("#{BASE}/invocation/next"))
    raise "runtime API /next answered #{res.code}" unless res.code == '200'

    headers = res.to_hash.transform_values(&:first)
    id = headers['lambda-runtime-aws-request-id']
    if headers['lambda-runtime-trace-id']
      ENV['_X_AMZN_TRACE_ID'] = headers['lambda-runtime-trace-id']
    else
      ENV.delete('_X_AMZN_TRACE_ID')
    end
    begin
      event = JSON.parse(res.body.to_s.empty? ? 'null' : res.body)
      result = handler.call(event: event, context: LambdaContext.new(headers))
      post("/invocation/#{id}/response", JSON.generate(result))
    rescue StandardError, ScriptError, SystemStackError, NoMemoryError => e
      body = error_body(e, 'Function')
      warn JSON.generate(body)
      post("/invocation/#{id}/error", JSON.generate(body), 'Lambda-Runtime-Function-Error-Type' => 'Function.Unknown')
    end
  end
end

LaminaRuntime.run
