/* Event-driven LIF layer with Norse's arithmetic (neuro.network.lif_step), float32 and float64.
 *
 * For each step t and batch element b: the synaptic input x of the step is the sum of the weight
 * rows wt[n, :] of the inputs n that spiked (scanned from a dense 0/1 byte raster; only active rows
 * are read), added in increasing n onto a zeroed buffer, then
 *     i_new = i + x
 *     v_dec = v + c_mem * ((v_leak - v) + i_new)        c_mem = dt * tau_mem_inv
 *     i     = i_new + c_syn * i_new                      c_syn = -dt * tau_syn_inv
 *     z     = (v_dec - v_th) > 0
 *     v     = (1 - z) * v_dec + z * v_reset
 * in exactly this operation order.  Compile with -ffp-contract=off and without -ffast-math: no fused
 * multiply-adds, no reassociation, so every operation rounds as torch's element-wise kernels do.
 *
 * Arguments (all arrays C-contiguous):
 *   steps, batch, n_in, m      sizes; b0 <= b < b1 is the batch range this call handles
 *   spikes  uint8 (steps, batch, n_in), nonzero = spike
 *   wt      (n_in, m) weights, row n = what input n adds to the m neurons
 *   v, i    (batch, m) state, updated in place
 *   z_out   uint8 (steps, batch, m) spikes, or NULL
 *   v_out   (steps, batch, m) membrane potential after the step, or NULL
 *   x       scratch of m elements (one per concurrent call)
 *   active  scratch of n_in int64 (one per concurrent call)
 * Returns the number of output spikes of the handled range.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static int64_t scan_active(const uint8_t *row, int64_t n_in, int64_t *active)
{
    int64_t n = 0, k = 0;
    for (; k + 8 <= n_in; k += 8) {
        uint64_t word;
        memcpy(&word, row + k, 8);
        if (word == 0)
            continue;
        for (int64_t j = k; j < k + 8; ++j)
            if (row[j])
                active[n++] = j;
    }
    for (; k < n_in; ++k)
        if (row[k])
            active[n++] = k;
    return n;
}

#define DEFINE_LIF_EVENTS(NAME, REAL)                                                              \
    int64_t NAME(int64_t steps, int64_t batch, int64_t n_in, int64_t m, int64_t b0, int64_t b1,     \
                 const uint8_t *spikes, const REAL *wt, REAL *v, REAL *i, REAL c_mem, REAL c_syn,   \
                 REAL v_leak, REAL v_th, REAL v_reset, uint8_t *z_out, REAL *v_out, REAL *x,        \
                 int64_t *active)                                                                   \
    {                                                                                               \
        int64_t total = 0;                                                                          \
        for (int64_t t = 0; t < steps; ++t) {                                                       \
            for (int64_t b = b0; b < b1; ++b) {                                                     \
                const int64_t row = t * batch + b;                                                  \
                const int64_t n_act = scan_active(spikes + row * n_in, n_in, active);               \
                REAL *restrict xs = x;                                                              \
                memset(xs, 0, (size_t)m * sizeof(REAL));                                            \
                for (int64_t a = 0; a < n_act; ++a) {                                               \
                    const REAL *restrict w = wt + active[a] * m;                                    \
                    for (int64_t k = 0; k < m; ++k)                                                 \
                        xs[k] = xs[k] + w[k];                                                       \
                }                                                                                   \
                REAL *restrict vb = v + b * m;                                                      \
                REAL *restrict ib = i + b * m;                                                      \
                int64_t count = 0;                                                                  \
                for (int64_t k = 0; k < m; ++k) {                                                   \
                    const REAL i_new = ib[k] + xs[k];                                               \
                    const REAL v_dec = vb[k] + c_mem * ((v_leak - vb[k]) + i_new);                  \
                    ib[k] = i_new + c_syn * i_new;                                                  \
                    const REAL zf = (v_dec - v_th) > (REAL)0 ? (REAL)1 : (REAL)0;                  \
                    vb[k] = ((REAL)1 - zf) * v_dec + zf * v_reset;                                  \
                    xs[k] = zf; /* reuse the scratch for the spikes of this step */                 \
                }                                                                                   \
                if (z_out) {                                                                        \
                    uint8_t *restrict zo = z_out + row * m;                                         \
                    for (int64_t k = 0; k < m; ++k)                                                 \
                        zo[k] = (uint8_t)(xs[k] != (REAL)0);                                        \
                }                                                                                   \
                for (int64_t k = 0; k < m; ++k)                                                     \
                    count += xs[k] != (REAL)0;                                                      \
                total += count;                                                                     \
                if (v_out)                                                                          \
                    memcpy(v_out + row * m, vb, (size_t)m * sizeof(REAL));                          \
            }                                                                                       \
        }                                                                                           \
        return total;                                                                               \
    }

DEFINE_LIF_EVENTS(lif_events_f32, float)
DEFINE_LIF_EVENTS(lif_events_f64, double)
