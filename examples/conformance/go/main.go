// lamina's runtime conformance function for Go: a provided.al2023 bootstrap built with AWS's
// aws-lambda-go (examples/conformance/README.md).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

type event struct {
	Op      string      `json:"op"`
	Data    interface{} `json:"data"`
	Names   []string    `json:"names"`
	Message string      `json:"message"`
	Ms      int         `json:"ms"`
	Text    string      `json:"text"`
}

func handler(ctx context.Context, ev event) (interface{}, error) {
	switch ev.Op {
	case "echo":
		return ev.Data, nil
	case "context":
		lc, _ := lambdacontext.FromContext(ctx)
		deadline, _ := ctx.Deadline()
		return map[string]interface{}{
			"request_id":           lc.AwsRequestID,
			"function_name":        lambdacontext.FunctionName,
			"function_version":     lambdacontext.FunctionVersion,
			"invoked_function_arn": lc.InvokedFunctionArn,
			"memory_limit_in_mb":   lambdacontext.MemoryLimitInMB,
			"remaining_time_ms":    time.Until(deadline).Milliseconds(),
			"log_group_name":       lambdacontext.LogGroupName,
			"log_stream_name":      lambdacontext.LogStreamName,
		}, nil
	case "env":
		out := map[string]interface{}{}
		for _, n := range ev.Names {
			if v, ok := os.LookupEnv(n); ok {
				out[n] = v
			} else {
				out[n] = nil
			}
		}
		return out, nil
	case "error":
		return nil, errors.New(ev.Message)
	case "sleep":
		time.Sleep(time.Duration(ev.Ms) * time.Millisecond)
		return "slept", nil
	case "print":
		fmt.Fprintln(os.Stdout, ev.Text)
		fmt.Fprintln(os.Stderr, ev.Text)
		return "printed", nil
	case "tmp_write":
		if err := os.WriteFile("/tmp/conformance.txt", []byte(ev.Data.(string)), 0o644); err != nil {
			return nil, err
		}
		return "written", nil
	case "tmp_read":
		b, err := os.ReadFile("/tmp/conformance.txt")
		if err != nil {
			return nil, nil
		}
		return string(b), nil
	case "layer":
		// Layer executables are in /opt/bin, on PATH as Lambda sets it.
		out, err := exec.Command("lamina-layer").Output()
		if err != nil {
			return nil, err
		}
		return strings.TrimSpace(string(out)), nil
	}
	return nil, fmt.Errorf("unknown op %q", ev.Op)
}

func main() {
	lambda.Start(handler)
}
