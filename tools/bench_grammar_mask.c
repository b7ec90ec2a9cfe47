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
    printf("%-24s %6s | %10s %8s %8s %9s | %10s %8s %8s %6s\n", "scenario", "tokens", "walk mean", "p50", "p99", "max",
           "cache mean", "p50", "p99", "hits");
    FILE *js = argc > 2 ? fopen(argv[2], "w") : NULL;
    if (js) fprintf(js, "{\"vocab\": %d, \"trie_nodes\": %d, \"trie_build_ms\": %.3f, \"scenarios\": [", V, trie.n_nodes, t_trie * 1e3);
    uint32_t *mask = malloc(((size_t)V + 31) / 32 * sizeof *mask);
    double all_cache = 0;
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
        double *tw = malloc((size_t)n * sizeof *tw), *tc = malloc((size_t)n * sizeof *tc);
        kiln_gmatch *mw, *mc;
        kiln_gmatch_create(&mw, &g, &trie, 0, &err);
        kiln_gmatch_create(&mc, &g, &trie, 64, &err);
        for (int i = 0; i < n; i++) {
            double a = kiln_now();
            kiln_gmatch_mask(mw, mask, &err);
            double b = kiln_now();
            if (!(mask[ids[i] >> 5] >> (ids[i] & 31) & 1)) { fprintf(stderr, "%s: token %d (step %d) masked out\n", SC[s].name, ids[i], i); return 1; }
            kiln_gmatch_mask(mc, mask, &err);
            double c = kiln_now();
            tw[i] = (b - a) * 1e6;
            tc[i] = (c - b) * 1e6;
            size_t l;
            const char *p = kiln_tok_piece(tok, ids[i], &l);
            if (kiln_gmatch_accept(mw, p, l, &err) || kiln_gmatch_accept(mc, p, l, &err)) { fprintf(stderr, "%s: %s\n", SC[s].name, err.msg); return 1; }
        }
        uint64_t comp, hit;
        kiln_gmatch_stats(mc, &comp, &hit);
        double mw_ = 0, mc_ = 0;
        for (int i = 0; i < n; i++) { mw_ += tw[i]; mc_ += tc[i]; }
        mw_ /= n; mc_ /= n;
        all_cache += mc_ * n;
        all_n += n;
        qsort(tw, (size_t)n, sizeof *tw, cmp_d);
        qsort(tc, (size_t)n, sizeof *tc, cmp_d);
        int p99 = (int)(0.99 * (n - 1));
        printf("%-24s %6d | %8.1fus %6.1fus %6.1fus %7.1fus | %8.1fus %6.1fus %6.1fus %5.0f%%\n", SC[s].name, n, mw_, tw[n / 2],
               tw[p99], tw[n - 1], mc_, tc[n / 2], tc[p99], 100.0 * (double)hit / (double)(hit + comp));
        if (js)
            fprintf(js, "%s{\"name\": \"%s\", \"tokens\": %d, \"walk_us\": {\"mean\": %.2f, \"p50\": %.2f, \"p99\": %.2f, \"max\": %.2f}, "
                        "\"cached_us\": {\"mean\": %.2f, \"p50\": %.2f, \"p99\": %.2f, \"max\": %.2f}, \"cache_hits\": %llu, \"walks\": %llu}",
                    s ? ", " : "", SC[s].name, n, mw_, tw[n / 2], tw[p99], tw[n - 1], mc_, tc[n / 2], tc[p99], tc[n - 1],
                    (unsigned long long)hit, (unsigned long long)comp);
        kiln_gmatch_free(mw);
        kiln_gmatch_free(mc);
        kiln_gram_free(&g);
        kiln_free(ids);
        free(tw);
        free(tc);
    }
    printf("\nall scenarios, with the cache: %.1f us per token (mean over %d tokens)\n", all_cache / all_n, all_n);
    if (js) { fprintf(js, "], \"cached_mean_us_all\": %.2f}\n", all_cache / all_n); fclose(js); }
    free(mask);
    kiln_token_trie_free(&trie);
    free(pieces); free(lens); free(skip);
    kiln_tokenizer_free(tok);
    return 0;
}
