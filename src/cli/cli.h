/* cli.h: shared helpers of the kiln command line (option parsing, engine options). */
#ifndef KILN_CLI_H
#define KILN_CLI_H
#include <stdint.h>
#include "kiln.h"
#include "server/server.h"

/* kiln_engine_options_default, then the KILN_* environment variables of the README mapped onto
 * the options (env.c: the only code that reads the environment); flags parsed afterwards win. */
void kiln_cli_engine_defaults(kiln_engine_options *o);
/* kiln_server_options_default, then KILN_API_KEY (api_key) and KILN_TEST_STEP_DELAY_MS (fault
 * injection: test_step_delay_ms) from the environment; flags parsed afterwards win. */
void kiln_cli_server_defaults(kiln_server_options *o);
/* Engine options common to every command that opens a model:
 *   --model PATH --tokenizer PATH --backend cpu|cuda --threads N --max-model-len N
 *   --max-num-seqs N --max-batch-tokens N --kv-blocks N --kv-memory-mb N --block-size N
 *   --no-prefix-cache --load-format auto|dummy --seed-weights N --kv-cache-dtype T
 *   --quantization fp8|fp8-per-channel
 *   --devices 0,1 | --tensor-parallel-size N --speculative-model PATH
 *   --speculative ngram|off --num-speculative-tokens K --ngram-prompt-lookup-max N
 *   --ngram-prompt-lookup-min N --draft-model PATH (= --speculative-model)
 *   --max-itl-ms MS --min-prefill-chunk N --step-cost FIXED_MS,TOKEN_MS,ROW_MS
 *   --no-step-cost-learn (the chunked-prefill ITL policy, kiln_sched_options)
 * Returns 1 when argv[*i] was one of them (consuming its value), 0 if not, -1 on a bad value. */
int kiln_cli_engine_opt(int argc, char **argv, int *i, kiln_engine_options *o);
/* "1,2,3" -> ids (allocated with kiln_malloc); -1 on a malformed list. */
int kiln_cli_parse_ids(const char *s, int32_t **ids, int *n);
int kiln_cli_parse_int(const char *s, long lo, long hi, long *v);
int kiln_cli_parse_float(const char *s, double *v);
void kiln_cli_print_error(const char *cmd, const kiln_error *err);
/* host description for reports: "AMD EPYC ..., 2 cores" */
void kiln_cli_machine(char *buf, size_t cap);

int kiln_cmd_generate(int argc, char **argv);
int kiln_cmd_logits(int argc, char **argv);
int kiln_cmd_info(int argc, char **argv);
int kiln_cmd_bench(int argc, char **argv);
int kiln_cmd_bench_serve(int argc, char **argv);
/* kiln bench --speculative ...: plain vs speculative decoding on a prompt set (bench_spec.c) */
int kiln_bench_spec(int argc, char **argv);
/* kiln bench --spec-cost K,...: a verification step's cost against a plain step (bench_spec_cost.c) */
int kiln_bench_spec_cost(int argc, char **argv);
int kiln_cmd_validate(int argc, char **argv);
int kiln_cmd_tokenize(int argc, char **argv);
int kiln_cmd_gguf(int argc, char **argv);
int kiln_cmd_quantize(int argc, char **argv);
int kiln_cmd_serve(int argc, char **argv);
int kiln_cmd_chat(int argc, char **argv);
#endif
