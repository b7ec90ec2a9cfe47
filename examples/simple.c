/* simple.c: the smallest complete use of libkiln, through include/kiln.h only.
 *
 *   build/simple MODEL [PROMPT] [TOKENIZER]
 *
 * Opens an engine, submits two requests (greedy and seeded sampling) that are batched together,
 * steps until both finish and streams each one's text as it arrives. */
#include <stdio.h>
#include <string.h>
#include "kiln.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL [PROMPT] [TOKENIZER]\n", argv[0]);
        return 2;
    }
    const char *prompt = argc > 2 ? argv[2] : "Once upon a time";
    kiln_engine_options o;
    kiln_engine_options_default(&o);
    o.model_path = argv[1];
    o.tokenizer_path = argc > 3 ? argv[3] : NULL;
    o.max_seqs = 4;
    o.kv_memory_mb = 64;
    kiln_error err = {0};
    kiln_engine *e;
    if (kiln_engine_open(&e, &o, &err)) {
        fprintf(stderr, "open: %s\n", err.msg);
        return 1;
    }
    int32_t *ids;
    int n;
    if (kiln_engine_tokenize(e, prompt, strlen(prompt), 1, &ids, &n, &err)) {
        fprintf(stderr, "tokenize: %s\n", err.msg);
        kiln_engine_close(e);
        return 1;
    }
    uint64_t req[2];
    for (int k = 0; k < 2; k++) {
        kiln_request_params p;
        kiln_request_params_default(&p);
        p.prompt_ids = ids;
        p.n_prompt = n;
        p.max_tokens = 48;
        p.sampling.temperature = k == 0 ? 0.0f : 0.8f;
        p.sampling.seed = 42;
        p.sampling.has_seed = 1;
        if (kiln_engine_add_request(e, &p, &req[k], &err)) {
            fprintf(stderr, "add: %s\n", err.msg);
            kiln_free(ids);
            kiln_engine_close(e);
            return 1;
        }
    }
    kiln_free(ids);
    static char text[2][8192];
    size_t len[2] = {0, 0};
    int done = 0, steps = 0;
    while (done < 2) {
        int active;
        if (kiln_engine_step(e, &active, &err)) { fprintf(stderr, "step: %s\n", err.msg); break; }
        steps++;
        done = 0;
        for (int k = 0; k < 2; k++) {
            kiln_output out;
            if (kiln_engine_poll(e, req[k], &out, &err)) { done++; continue; } /* released after its last poll */
            if (len[k] + out.text_len < sizeof text[k]) {
                memcpy(text[k] + len[k], out.text_delta, out.text_len);
                len[k] += out.text_len;
            }
            done += out.finish != KILN_FINISH_NONE;
        }
    }
    kiln_engine_stats st;
    kiln_engine_get_stats(e, &st);
    printf("greedy:  %s%.*s\nsampled: %s%.*s\n(%d steps, %llu backend waits)\n", prompt, (int)len[0], text[0], prompt,
           (int)len[1], text[1], steps, (unsigned long long)st.syncs);
    kiln_engine_close(e);
    return 0;
}
