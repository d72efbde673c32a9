# lamina's runtime conformance function for Ruby (examples/conformance/README.md).
require 'json'

def lambda_handler(event:, context:)
  case event['op']
  when 'echo' then event['data']
  when 'context'
    {
      'request_id' => context.aws_request_id,
      'function_name' => context.function_name,
      'function_version' => context.function_version,
      'invoked_function_arn' => context.invoked_function_arn,
      'memory_limit_in_mb' => context.memory_limit_in_mb.to_i,
      'remaining_time_ms' => context.get_remaining_time_in_millis,
      'log_group_name' => context.log_group_name,
      'log_stream_name' => context.log_stream_name
    }
  when 'env' then event['names'].to_h { |n| [n, ENV[n]] }
  when 'error' then raise event['message']
  when 'sleep'
    sleep(event['ms'] / 1000.0)
    'slept'
  when 'print'
    $stdout.puts event['text']
    $stderr.puts event['text']
    'printed'
  when 'tmp_write'
    File.write('/tmp/conformance.txt', event['data'])
    'written'
  when 'tmp_read'
    File.exist?('/tmp/conformance.txt') ? File.read('/tmp/conformance.txt') : nil
  when 'layer'
    require 'lamina_layer'
    LaminaLayer.hello
  else raise ArgumentError, "unknown op #{event['op']}"
  end
end
