/* bench_grammar_mask.c: token-mask cost of the grammar engine (src/grammar) per generated token.
 *
 *   bench_grammar_mask TOKENIZER [OUT.json]
 *
 * For each scenario a valid output text is tokenized with TOKENIZER (tekken_240911.json: 131,072
 * tokens), and the matcher follows it token by token; at every step the mask of the state is
 * computed (a) without cache (every step walks the token trie) and (b) with the matcher's mask
 * cache (64 states, what the engine uses). Prints a table (mean / p50 / p99 / max us per token)
 * and writes the figures as JSON. bench/grammar_mask.sh finds the tekken file and runs it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "grammar/grammar.h"
#include "tokenizer/tokenizer.h"
#include "util/alloc.h"
#include "util/timeutil.h"

typedef struct {
    const char *name;
    int kind; /* 0 gbnf, 1 regex, 2 schema */
    const char *src;
    const char *text;
} scen;

static const scen SC[] = {
    {"json_schema (nested)", 2,
     "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":12},\"age\":{\"type\":\"integer\",\"minimum\":0,"
     "\"maximum\":120},\"role\":{\"enum\":[\"admin\",\"user\",\"guest\"]},\"score\":{\"type\":\"number\",\"minimum\":-10,\"maximum\":10},"
     "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"maxLength\":8},\"maxItems\":3},\"address\":{\"type\":\"object\","
     "\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":16},\"zip\":{\"type\":\"string\",\"pattern\":\"^[0-9]{5}$\"}},"
     "\"required\":[\"city\"]},\"notes\":{\"type\":\"string\"}},\"required\":[\"name\",\"age\",\"role\",\"address\"]}",
     "{\"name\": \"Alice Smith\", \"age\": 42, \"role\": \"admin\", \"score\": -3.25, \"tags\": [\"x\", \"blue\"], "
     "\"address\": {\"city\": \"Paris\", \"zip\": \"75001\"}, \"notes\": \"Likes long walks on the beach, reading books "
     "about history and cooking Italian food with friends on the weekend.\"}"},
    {"json_object (any JSON)", 2, "{\"type\":\"object\"}",
     "{\"id\": 12345, \"items\": [{\"sku\": \"A-1\", \"qty\": 2, \"price\": 9.99}, {\"sku\": \"B-22\", \"qty\": 1, \"price\": 120.5}], "
     "\"paid\": true, \"note\": null, \"customer\": {\"name\": \"Bob\", \"email\": \"bob@example.com\"}}"},
    {"regex (email list)", 1, "([a-z]{1,12}@[a-z]{1,12}\\.(com|org|net)(, )?){1,5}",
     "alice@example.com, bob@mail.org, carol@site.net"},
    {"gbnf (arithmetic)", 0, "root ::= expr\nexpr ::= term ((\"+\" | \"-\" | \"*\") term)*\nterm ::= [0-9]+ | \"(\" expr \")\"\n",
     "(12+345)*(6-78)+(9*(10+11))-1234"},
};

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s TOKENIZER [OUT.json]\n", argv[0]);
        return 2;
    }
    kiln_error err;
    kiln_tokenizer *tok;
    if (kiln_tokenizer_load(&tok, argv[1], &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    int V = kiln_tokenizer_vocab_size(tok);
    const char **pieces = malloc((size_t)V * sizeof *pieces);
    size_t *lens = malloc((size_t)V * sizeof *lens);
    uint8_t *skip = calloc((size_t)V, 1);
    for (int i = 0; i < V; i++) {
        pieces[i] = kiln_tok_piece(tok, i, &lens[i]);
        if (!pieces[i]) { pieces[i] = ""; lens[i] = 0; }
        skip[i] = (uint8_t)(kiln_tok_is_special(tok, i) != 0);
    }
    kiln_token_trie trie;
    double t0 = kiln_now();
    if (kiln_token_trie_build(&trie, V, pieces, lens, skip, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    double t_trie = kiln_now() - t0;
    printf("vocabulary %d tokens (%d in the trie, %d nodes, longest %d bytes), trie built in %.1f ms\n\n", V, trie.n_toks,
           trie.n_nodes, trie.max_depth, t_trie * 1e3);
    printf("us per token; cold: the first request with the grammar (each new position walks the trie);\n"
           "warm: a later request (position tables shared) with / without the per-state mask cache\n");
    printf("%-24s %6s %5s | %9s %8s %9s | %8s %7s %7s %8s %5s | %8s %7s %7s\n", "scenario", "tokens", "pos", "cold mean",
           "p50", "p99", "warm", "p50", "p99", "max", "hits", "no-cache", "p50", "p99");
    FILE *js = argc > 2 ? fopen(argv[2], "w") : NULL;
    if (js) fprintf(js, "{\"vocab\": %d, \"trie_nodes\": %d, \"trie_build_ms\": %.3f, \"scenarios\": [", V, trie.n_nodes, t_trie * 1e3);
    uint32_t *mask = malloc(((size_t)V + 31) / 32 * sizeof *mask);
    kiln_gscratch *ws;
    if (kiln_gscratch_create(&ws, trie.max_depth, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    double all_cache = 0, all_nc = 0, all_cold = 0;
    int all_n = 0;
    for (size_t s = 0; s < sizeof SC / sizeof SC[0]; s++) {
        kiln_gram g;
        int rc = SC[s].kind == 0 ? kiln_gram_from_gbnf(&g, SC[s].src, strlen(SC[s].src), &err)
               : SC[s].kind == 1 ? kiln_gram_from_regex(&g, SC[s].src, strlen(SC[s].src), &err)
                                 : kiln_gram_from_json_schema(&g, SC[s].src, &err);
        if (rc) { fprintf(stderr, "%s: %s\n", SC[s].name, err.msg); return 1; }
        int32_t *ids;
        int n;
        if (kiln_tokenizer_encode(tok, SC[s].text, strlen(SC[s].text), 0, &ids, &n, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
        /* pass 0: the first request with this grammar (position tables filled as reached);
         * pass 1: a later request (tables shared, empty state cache); pass 2: the same without
         * the state cache (every step: OR of the tables + the exit walks) */
        double *tm[3];
        uint64_t hit[3], comp[3];
        kiln_gtables *tabs;
        kiln_gtables_create(&tabs, &g, &trie, &err);
        for (int pass = 0; pass < 3; pass++) {
            tm[pass] = malloc((size_t)n * sizeof(double));
            kiln_gmatch *mm;
            kiln_gmatch_create(&mm, &g, &trie, tabs, pass == 2 ? 0 : 64, &err);
            for (int i = 0; i < n; i++) {
                double a = kiln_now();
                if (kiln_gmatch_mask(mm, ws, mask, &err)) { fprintf(stderr, "%s: %s\n", SC[s].name, err.msg); return 1; }
                tm[pass][i] = (kiln_now() - a) * 1e6;
                if (!(mask[ids[i] >> 5] >> (ids[i] & 31) & 1)) { fprintf(stderr, "%s: token %d (step %d) masked out\n", SC[s].name, ids[i], i); return 1; }
                size_t l;
                const char *p = kiln_tok_piece(tok, ids[i], &l);
                if (kiln_gmatch_accept(mm, p, l, &err)) { fprintf(stderr, "%s: %s\n", SC[s].name, err.msg); return 1; }
            }
            kiln_gmatch_stats(mm, &comp[pass], &hit[pass]);
            kiln_gmatch_free(mm);
        }
        int npos = kiln_gtables_count(tabs);
        kiln_gtables_free(tabs);
        double mean[3], p50[3], p99[3], mx[3];
        for (int pass = 0; pass < 3; pass++) {
            mean[pass] = 0;
            for (int i = 0; i < n; i++) mean[pass] += tm[pass][i];
            mean[pass] /= n;
            qsort(tm[pass], (size_t)n, sizeof(double), cmp_d);
            p50[pass] = tm[pass][n / 2];
            p99[pass] = tm[pass][(int)(0.99 * (n - 1))];
            mx[pass] = tm[pass][n - 1];
            free(tm[pass]);
        }
        all_cache += mean[1] * n;
        all_nc += mean[2] * n;
        all_cold += mean[0] * n;
        all_n += n;
        printf("%-24s %6d %5d | %9.1f %8.1f %9.1f | %8.1f %7.1f %7.1f %8.1f %4.0f%% | %8.1f %7.1f %7.1f\n", SC[s].name, n, npos,
               mean[0], p50[0], p99[0], mean[1], p50[1], p99[1], mx[1], 100.0 * (double)hit[1] / (double)(hit[1] + comp[1]), mean[2],
               p50[2], p99[2]);
        if (js)
            fprintf(js, "%s{\"name\": \"%s\", \"tokens\": %d, \"positions\": %d, \"cold_us\": {\"mean\": %.2f, \"p50\": %.2f, \"p99\": %.2f, \"max\": %.2f}, "
                        "\"warm_us\": {\"mean\": %.2f, \"p50\": %.2f, \"p99\": %.2f, \"max\": %.2f}, \"warm_state_cache_hits\": %llu, "
                        "\"warm_no_state_cache_us\": {\"mean\": %.2f, \"p50\": %.2f, \"p99\": %.2f, \"max\": %.2f}}",
                    s ? ", " : "", SC[s].name, n, npos, mean[0], p50[0], p99[0], mx[0], mean[1], p50[1], p99[1], mx[1],
                    (unsigned long long)hit[1], mean[2], p50[2], p99[2], mx[2]);
        kiln_gram_free(&g);
        kiln_free(ids);
    }
    printf("\nall scenarios (%d tokens), mean us per token: cold %.1f, warm %.1f, warm without the state cache %.1f\n", all_n,
           all_cold / all_n, all_cache / all_n, all_nc / all_n);
    if (js) {
        fprintf(js, "], \"mean_us_all\": {\"cold\": %.2f, \"warm\": %.2f, \"warm_no_state_cache\": %.2f}}\n", all_cold / all_n,
                all_cache / all_n, all_nc / all_n);
        fclose(js);
    }
    free(mask);
    kiln_gscratch_free(ws);
    kiln_token_trie_free(&trie);
    free(pieces); free(lens); free(skip);
    kiln_tokenizer_free(tok);
    return 0;
}
