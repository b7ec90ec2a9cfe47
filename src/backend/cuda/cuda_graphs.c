/* cuda_graphs.c: CUDA graphs, captured at create (load-time work, I7) from the forward pass of
 * cuda_forward.c and replayed by encode_step (cuda_plan.c):
 *   decode graphs: one per (rows, block-table width) bucket and parity, the whole step;
 *   piecewise graphs: [row bucket][L + 1] pieces, everything but attention and the tail.
 * The buckets are here too: the plan pads a step to its bucket's rows before a replay. */
#include "backend/cuda/cuda_backend_internal.h"

/* The piecewise-graph bucket of a step of T rows (1, 2, 4, 8, 16, then multiples of
 * PIECE_ROWS: GEMMs of a few rows keep their GEMV kernels) and its rows (*Tb). */
int kiln_cuda_piece_bucket(int T, int *Tb) {
    int b = 0, r = 1;
    while (r < T && r < PIECE_ROWS) { r *= 2; b++; }
    if (T > PIECE_ROWS) {
        b += (T - 1) / PIECE_ROWS;
        r = PIECE_ROWS * ((T - 1) / PIECE_ROWS + 1);
    }
    if (Tb) *Tb = r;
    return b;
}

/* the decode and piecewise graphs (kiln_cuda_capture_graphs), whole or partly captured */
void kiln_cuda_free_graphs(cuda_backend *c) {
    if (c->graphs) {
        for (int i = 0; i < 2 * c->n_graph_rows * c->n_graph_widths; i++)
            if (c->graphs[i]) cudaGraphExecDestroy(c->graphs[i]);
        kiln_free(c->graphs);
        c->graphs = NULL;
    }
    if (c->pieces) {
        for (int i = 0; i < c->n_piece_buckets * (c->m->cfg.n_layers + 1); i++)
            if (c->pieces[i]) cudaGraphExecDestroy(c->pieces[i]);
        kiln_free(c->pieces);
        c->pieces = NULL;
    }
    c->n_piece_buckets = 0;
}

/* End the capture begun on c->st around work that returned rc; instantiate it into *out. */
static int end_capture(cuda_backend *c, int rc, cudaGraphExec_t *out, kiln_error *err) {
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(c->st, &g);
    if (rc) {
        if (g) cudaGraphDestroy(g);
        return rc;
    }
    if (e != cudaSuccess) return kiln_cuda_error(err, e, "cudaStreamEndCapture", __FILE__, __LINE__);
    e = cudaGraphInstantiate(out, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) return kiln_cuda_error(err, e, "cudaGraphInstantiate", __FILE__, __LINE__);
    return KILN_OK;
}

/* ---- CUDA graphs for decode steps -----------------------------------------------------------
 * A decode step (every sequence one row that wants a token, drawn on the device, no logit bias,
 * suppression or penalty-table load this step) is padded to a bucket of rows (a power of two)
 * and a block-table width (a power of two, or the full width), and replays the graph captured
 * for that bucket at create, so its ~400 launches cost one. Padding rows: token 0 at position 0,
 * K/V written to slot 0 of the null block, a block table of null blocks, greedy draws that the
 * engine never reads. */

static int pow2_at_least(int v) { int b = 1; while (b < v) b <<= 1; return b; }

/* the bucket indices of (rows, width), or -1 when the step has no graph */
int kiln_cuda_graph_bucket(const cuda_backend *c, int rows, int width, int *ri, int *wi) {
    int rb = pow2_at_least(rows), wb = pow2_at_least(width);
    if (rb > c->graph_max_rows) return -1;
    if (wb > c->cfg.max_blocks_per_seq) wb = c->cfg.max_blocks_per_seq;
    int r = 0, w = 0;
    while ((1 << r) < rb) r++;
    while (w < c->n_graph_widths && c->graph_widths[w] < wb) w++;
    if (w == c->n_graph_widths) return -1;
    *ri = r;
    *wi = w;
    return 0;
}

void kiln_cuda_fill_plan_shape(const cuda_backend *c, step_plan *p, int T, int bt_w) {
    memset(p, 0, sizeof *p);
    p->T = p->n = T;
    p->bt_w = bt_w;
    p->sample = 1;
    p->n_tiles = c->pf_tile_rows > 0 && T >= c->decode_tc_rows ? T : 0;
    p->n_runs = p->n_tiles ? 0 : 1;
    if (p->n_tiles) p->tc_splits = kiln_cuda_tc_split_count(c, T);
    p->desc_bytes = c->off_bt + (size_t)T * bt_w * 4;
    kiln_cuda_sampling_layout(p, T, 0, 0, 0, 0);
}

/* Capture one graph per (rows, width) bucket: load-time work (I7), host-side only apart from the
 * instantiation. */
int kiln_cuda_capture_graphs(cuda_backend *c, kiln_error *err) {
    int rb = 1, nr = 0;
    while (rb * 2 <= c->graph_max_rows) { rb *= 2; nr++; }
    c->graph_max_rows = rb;
    c->n_graph_rows = nr + 1;
    int w = 1;
    c->n_graph_widths = 0;
    while (w < c->cfg.max_blocks_per_seq) { c->graph_widths[c->n_graph_widths++] = w; w *= 2; }
    c->graph_widths[c->n_graph_widths++] = c->cfg.max_blocks_per_seq;
    /* one set per parity: a graph copies from and to its parity's pinned buffers */
    int ng = c->n_graph_rows * c->n_graph_widths;
    c->graphs = kiln_calloc((size_t)2 * ng, sizeof(cudaGraphExec_t));
    if (!c->graphs) return KILN_ERR(err, KILN_ERR_OOM, "cuda backend: out of memory for the graph table");
    for (int par = 0; par < 2; par++)
    for (int r = 0; r < c->n_graph_rows; r++)
        for (int wi = 0; wi < c->n_graph_widths; wi++) {
            kiln_cuda_use_parity(c, par);
            step_plan p;
            int T = 1 << r, rc;
            kiln_cuda_fill_plan_shape(c, &p, T, c->graph_widths[wi]);
            c->run_a[0] = 0;
            c->run_b[0] = T;
            KILN_CUDA_TRY(err, cudaStreamBeginCapture(c->st, cudaStreamCaptureModeThreadLocal));
            /* the L2 prefetch branches only in these graphs: forks and joins inside one capture */
            c->l2pf_on = c->l2pf_bytes > 0 && T >= L2PF_MIN_ROWS && T <= L2PF_MAX_ROWS;
            rc = kiln_cuda_enqueue(c, &p, NULL, err);
            c->l2pf_on = 0;
            if ((rc = end_capture(c, rc, &c->graphs[par * ng + r * c->n_graph_widths + wi], err))) return rc;
        }
    /* the pieces: [bucket][piece], all but attention and the tail of a step of the bucket's rows */
    int L = c->m->cfg.n_layers, nb = c->n_piece_buckets;
    if (nb == 0) return KILN_OK;
    c->pieces = kiln_calloc((size_t)nb * (L + 1), sizeof(cudaGraphExec_t));
    if (!c->pieces) return KILN_ERR(err, KILN_ERR_OOM, "cuda backend: out of memory for the piecewise graphs");
    for (int b = 0; b < nb; b++)
        for (int k = 0; k <= L; k++) {
            step_plan p;
            int rc;
            memset(&p, 0, sizeof p);
            p.T = b < 5 ? 1 << b : PIECE_ROWS * (b - 3);
            KILN_CUDA_TRY(err, cudaStreamBeginCapture(c->st, cudaStreamCaptureModeThreadLocal));
            if ((rc = end_capture(c, kiln_cuda_enq_piece(c, &p, k, err), &c->pieces[b * (L + 1) + k], err))) return rc;
        }
    return KILN_OK;
}
