# A Lambda-style Ruby handler (runtime ruby3.1, handler lambda_function.lambda_handler).
def lambda_handler(event:, context:)
  puts "hello from #{context.function_name} (#{context.aws_request_id})"
  {
    message: "Hello, #{event['name'] || 'world'}!",
    function: context.function_name,
    remaining_ms: context.get_remaining_time_in_millis,
    ruby: RUBY_VERSION
  }
end
