#!/usr/bin/env bash
# `make demo`: start lamina serve on its embedded defaults (state in /var/lib/lamina, API on
# 127.0.0.1:9000), deploy examples/hello-python with the AWS CLI, invoke it, print the result.
set -euo pipefail
cd "$(dirname "$0")/.."
LAMINA=${LAMINA_BIN:-target/release/lamina}
AWS=.venv/bin/aws
STATE=/var/lib/lamina
work=$(mktemp -d /tmp/lamina-demo-XXXXXX)
"$LAMINA" serve >"$work/serve.log" 2>&1 &
pid=$!
cleanup() { kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/9000) 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/serve.log"; exit 1; }
  sleep 0.05
done
head -2 "$work/serve.log"
export AWS_SHARED_CREDENTIALS_FILE=$STATE/credentials AWS_CONFIG_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
aws() { "$AWS" --endpoint-url http://127.0.0.1:9000 --region us-east-1 "$@"; }
(cd examples/hello-python && python3 -c 'import zipfile; z=zipfile.ZipFile("'"$work"'/fn.zip","w"); z.write("app.py"); z.close()')
aws lambda delete-function --function-name hello >/dev/null 2>&1 || true
echo '$ aws lambda create-function --function-name hello --runtime python3.11 --handler app.handler ...'
aws lambda create-function --function-name hello --runtime python3.11 --handler app.handler \
  --role arn:aws:iam::000000000000:role/demo --zip-file "fileb://$work/fn.zip" \
  --query '{FunctionArn: FunctionArn, State: State, CodeSha256: CodeSha256}' --output table
aws lambda wait function-active-v2 --function-name hello
echo '$ aws lambda invoke --function-name hello --payload {"name": "lamina"} --log-type Tail out.json'
aws lambda invoke --function-name hello --payload '{"name": "lamina"}' --log-type Tail \
  --query LogResult --output text "$work/out.json" | base64 -d
echo "result: $(cat "$work/out.json")"

# The same in Node.js and Ruby (their runtime layers build in well under a second).
"$LAMINA" runtime build nodejs20.x >/dev/null 2>&1
"$LAMINA" runtime build ruby3.1 >/dev/null 2>&1
deploy() {  # name runtime handler dir file
  (cd "examples/$4" && python3 -c 'import zipfile,sys; z=zipfile.ZipFile(sys.argv[1],"w"); z.write(sys.argv[2]); z.close()' "$work/$1.zip" "$5")
  aws lambda delete-function --function-name "$1" >/dev/null 2>&1 || true
  aws lambda create-function --function-name "$1" --runtime "$2" --handler "$3" \
    --role arn:aws:iam::000000000000:role/demo --zip-file "fileb://$work/$1.zip" >/dev/null
  aws lambda wait function-active-v2 --function-name "$1"
  aws lambda invoke --function-name "$1" --payload '{"name": "lamina"}' "$work/$1.json" >/dev/null
  echo "$2 result: $(cat "$work/$1.json")"
}
deploy hello-node nodejs20.x index.handler hello-node index.mjs
deploy hello-ruby ruby3.1 lambda_function.lambda_handler hello-ruby lambda_function.rb

# Versions and a weighted alias: X-Amz-Executed-Version says which version ran.
echo '$ aws lambda publish-version / update-function-configuration / publish-version / create-alias live (1, 20% to 2)'
aws lambda publish-version --function-name hello --query Version --output text >/dev/null
aws lambda update-function-configuration --function-name hello --description v2 >/dev/null
aws lambda publish-version --function-name hello --query Version --output text >/dev/null
aws lambda create-alias --function-name hello --name live --function-version 1 \
  --routing-config '{"AdditionalVersionWeights": {"2": 0.2}}' >/dev/null
for i in 1 2 3 4 5 6 7 8 9 10; do
  aws lambda invoke --function-name hello --qualifier live "$work/a.json" --query ExecutedVersion --output text
done | sort | uniq -c | awk '{print "version " $2 ": " $1 " of 10 invocations"}'
echo '$ lamina status'
"$LAMINA" status
