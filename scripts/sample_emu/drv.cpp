// drv.cpp: see run.sh. One row per launch; random logits (5 shapes) x random parameters.
#include "emu.h"
thread_local emu_dim emu_tid;
emu_dim emu_bid;
pthread_barrier_t emu_bar;
emu_warp emu_warps[32];
#include "sample_kern.inc"
extern "C" {
#include "engine/sampler.h"
}
#include <stdio.h>
#include <stdlib.h>
struct targs { int tid; const float *logits; float *work; int V; const kiln_cuda_sample_row *rows; const int32_t *bi; const float *bv; const int32_t *su; int32_t *counts; const uint8_t *inp; int32_t *tok; float *lp; int32_t *ti; float *tl; };
static void *thr(void *a) {
    targs *t = (targs *)a; emu_tid.x = t->tid; emu_tid.y = emu_tid.z = 0;
    sample_kernel(t->logits, t->work, t->V, t->rows, t->bi, t->bv, t->su, t->counts, t->inp, t->tok, t->lp, t->ti, t->tl);
    return NULL;
}
static void launch(int n, targs base) {
    pthread_barrier_init(&emu_bar, NULL, 1024);
    for (int w = 0; w < 32; w++) pthread_barrier_init(&emu_warps[w].bar, NULL, 32);
    for (int b = 0; b < n; b++) {
        emu_bid.x = b;
        pthread_t th[1024]; targs a[1024];
        for (int t = 0; t < 1024; t++) { a[t] = base; a[t].tid = t; pthread_attr_t at; pthread_attr_init(&at); pthread_attr_setstacksize(&at, 1 << 16); pthread_create(&th[t], &at, thr, &a[t]); }
        for (int t = 0; t < 1024; t++) pthread_join(th[t], NULL);
    }
}
static unsigned long long S = 88172645463325252ull;
static unsigned long long rnd() { S ^= S >> 12; S ^= S << 25; S ^= S >> 27; return S * 2685821657736338717ULL; }
static float rf() { return (float)((rnd() >> 40) * (1.0 / 8388608.0) - 1.0); }
int main(int argc, char **argv) {
    int V = argc > 1 ? atoi(argv[1]) : 1000, iters = argc > 2 ? atoi(argv[2]) : 20;
    if (argc > 3) S = strtoull(argv[3], 0, 10);
    kiln_sampler cs; kiln_error err; kiln_sampler_init(&cs, V, &err);
    float *x = (float *)malloc(V * 4), *w = (float *)malloc(V * 4); int32_t *counts = (int32_t *)calloc(V, 4); uint8_t *inp = (uint8_t *)calloc(V, 1);
    int bad = 0, total = 0;
    for (int it = 0; it < iters; it++) {
        int mode = it % 5;
        for (int i = 0; i < V; i++) {
            float r = rf();
            x[i] = mode == 0 ? r : mode == 1 ? 6 * r : mode == 2 ? 2 * r : mode == 3 ? 0.25f * floorf(12 * r) : roundf(40 * r) / 4;
        }
        if (mode == 2) for (int j = 0; j < 4; j++) x[rnd() % V] = 12 + 3 * rf();
        static const float temps[3] = {0, 0.7f, 1.3f}, topps[3] = {1, 0.9f, 0.5f}, minps[3] = {0, 0.05f, 1.5f};
        int topks[4] = {0, 1, 40, V};
        kiln_cuda_sample_row r; memset(&r, 0, sizeof r);
        kiln_sampling sp; memset(&sp, 0, sizeof sp);
        sp.temperature = r.temperature = temps[rnd() % 3]; sp.top_k = r.top_k = topks[rnd() % 4];
        sp.top_p = r.top_p = topps[rnd() % 3]; sp.min_p = r.min_p = minps[rnd() % 3];
        int pen = rnd() % 2;
        sp.repetition_penalty = r.repetition_penalty = pen ? 1.2f : 1.0f;
        sp.presence_penalty = r.presence_penalty = pen ? 0.5f : 0; sp.frequency_penalty = r.frequency_penalty = pen ? 0.3f : 0;
        int32_t prompt[24], out[16], supp[3], bi[5]; float bv[5];
        for (int i = 0; i < 24; i++) prompt[i] = rnd() % V;
        for (int i = 0; i < 16; i++) out[i] = i % 4 == 1 ? out[i - 1] : (int32_t)(rnd() % V);
        memset(counts, 0, V * 4); memset(inp, 0, V);
        for (int i = 0; i < 24; i++) inp[prompt[i]] = 1;
        for (int i = 0; i < 16; i++) counts[out[i]]++;
        r.slot = 0;
        int nb = rnd() % 2 ? 5 : 0; for (int i = 0; i < 5; i++) { bi[i] = rnd() % V; bv[i] = 4 * rf(); } bi[4] = bi[0];
        sp.bias_ids = bi; sp.bias_values = bv; sp.n_bias = nb; r.n_bias = nb;
        int ns = rnd() % 2 ? 3 : 0; for (int i = 0; i < 3; i++) supp[i] = rnd() % V; r.n_supp = ns;
        r.n_top = (int)(rnd() % 3) * 10; r.want_logprob = 1; r.seed = rnd(); r.position = rnd() % 1000;
        int32_t tok; float lp; int32_t ti[20]; float tl[20];
        targs a = {0, x, w, V, &r, bi, bv, supp, counts, inp, &tok, &lp, ti, tl};
        launch(1, a);
        kiln_token_logprob top[20]; float clp;
        int32_t ct = kiln_sample(&cs, x, &sp, prompt, 24, out, 16, supp, ns, r.seed, r.position, &clp, top, r.n_top);
        int nd = 0; for (int i = 0; i < V; i++) nd += w[i] != cs.work[i];
        int tb = 0; for (int j = 0; j < r.n_top; j++) tb += ti[j] != top[j].id || fabsf(tl[j] - top[j].logprob) > 1e-4f;
        int cb = counts[tok] != (int)std::count(out, out + 16, tok) + 1;
        total++;
        if (ct != tok || nd || tb || fabsf(lp - clp) > 1e-4f || cb) {
            bad++;
            printf("MISMATCH it=%d mode=%d T=%g k=%d p=%g minp=%g pen=%d nb=%d ns=%d ntop=%d: gpu %d cpu %d, work diff %d, top bad %d, lp %g/%g, counts bad %d\n",
                   it, mode, r.temperature, r.top_k, r.top_p, r.min_p, pen, nb, ns, r.n_top, tok, ct, nd, tb, lp, clp, cb);
        }
    }
    printf("V=%d: %d/%d bad\n", V, bad, total);
    return 0;
}
