/* SPDX-License-Identifier: MIT */
/*
 * weft-bench's report: statistics over runs, the result rows, the table on
 * stdout, the CSV files and the SVG charts (drawn here, no plotting tool
 * needed), and the progress line on stderr.
 *
 * Every figure is the median of the runs, with their least and greatest.
 * A row's ratio is computed from the two medians the table prints beside it,
 * so the table can be checked by hand; the charts are drawn from the same
 * rows, so they show the same figures. results.csv also keeps the median of
 * the per-run ratios, a second view that cancels slow drift of the machine
 * between runs, in a column named for what it is.
 */
#include "bench.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* ---- statistics ----------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

figure summarize(const double *v, int n)
{
    double s[RUNS_MAX];
    if (n < 1 || n > RUNS_MAX) {
        fprintf(stderr, "weft-bench: summarize: %d values, expected 1..%d\n", n, RUNS_MAX);
        abort();
    }
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return (figure){ n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2, s[0], s[n - 1] };
}

figure figure_of(double med, double min, double max)
{
    return (figure){ med, min, max };
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

void sort_samples(int64_t *v, long n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_i64);
}

int64_t sample_at(const int64_t *sorted, long n, double p)
{
    return sorted[(long)((double)(n - 1) * p)];
}

/* ---- rows ----------------------------------------------------------------- */

enum { ROWS_MAX = 160 };
static row rows[ROWS_MAX];
static int nrows;

static row *new_row(const char *group, const char *id, const char *measure, const char *unit,
                    enum better better)
{
    if (nrows == ROWS_MAX) {
        fprintf(stderr, "weft-bench: more than %d rows; enlarge ROWS_MAX\n", ROWS_MAX);
        exit(1);
    }
    row *r = &rows[nrows++];
    *r = (row){ .group = group, .id = id, .measure = measure, .unit = unit,
                .better = better, .in_table = 1 };
    return r;
}

row *add_row(const char *group, const char *id, const char *measure, const char *unit,
             enum better better, const double *w, const double *p, int n)
{
    row *r = new_row(group, id, measure, unit, better);
    if (w) {
        r->weft = summarize(w, n);
        r->has_weft = 1;
    }
    if (p) {
        r->vs = summarize(p, n);
        r->has_vs = 1;
    }
    if (w && p) {
        double q[RUNS_MAX];
        for (int i = 0; i < n; i++)
            q[i] = w[i] / p[i];
        r->run_ratio = summarize(q, n).med;
    }
    return r;
}

row *add_row_fig(const char *group, const char *id, const char *measure, const char *unit,
                 enum better better, const figure *w, const figure *p)
{
    row *r = new_row(group, id, measure, unit, better);
    if (w) {
        r->weft = *w;
        r->has_weft = 1;
    }
    if (p) {
        r->vs = *p;
        r->has_vs = 1;
    }
    return r;
}

row *rows_of(const char *group, int *n)
{
    int first = -1, k = 0;
    for (int i = 0; i < nrows; i++)
        if (!strcmp(rows[i].group, group)) {
            if (first < 0)
                first = i;
            k++;
        }
    *n = k;
    return first < 0 ? NULL : &rows[first];
}

static const char *weft_name(const row *r) { return r->label ? r->label : "weft"; }
static const char *vs_name(const row *r) { return r->other ? r->other : "pthreads"; }

static const char *better_word(enum better b)
{
    switch (b) {
    case FASTER: return "faster";
    case LESS:   return "less";
    case LOWER:  return "lower";
    case MORE:   return "more";
    }
    return "";
}

/* 1 when the weft side's median is the better one, 0 when the other's, -1
 * when they are equal or a side is missing. */
static int weft_wins(const row *r)
{
    if (!r->has_weft || !r->has_vs || r->weft.med == r->vs.med)
        return -1;
    return r->better == MORE ? r->weft.med > r->vs.med : r->weft.med < r->vs.med;
}

/* By how much the winner wins: the larger median over the smaller. */
static double win_factor(const row *r)
{
    double a = r->weft.med, b = r->vs.med;
    if (a <= 0 || b <= 0)
        return 0;
    return a > b ? a / b : b / a;
}

/* A figure or a factor as the table prints it: three significant digits,
 * groups of three above a thousand: 0.978, 2.05, 31.5, 232, 1,230. */
static void fmt_num(char *buf, size_t len, double v)
{
    if (v >= 1000)
        grouped(buf, len, (long)(v + 0.5));
    else if (v >= 100)
        snprintf(buf, len, "%.0f", v);
    else if (v >= 10)
        snprintf(buf, len, "%.1f", v);
    else if (v >= 1)
        snprintf(buf, len, "%.2f", v);
    else
        snprintf(buf, len, "%#.3g", v);
}

/* The runs of the two sides overlap: the medians' order is not settled. */
static int overlapping(const row *r)
{
    return r->has_weft && r->has_vs && r->weft.min <= r->vs.max && r->vs.min <= r->weft.max;
}

const char *row_verdict(const row *r, char *buf, size_t len)
{
    int w = weft_wins(r);
    char f[32];
    if (w >= 0 && win_factor(r) < 1.005)
        w = -1;   /* equal to the three digits shown */
    if (w < 0) {
        snprintf(buf, len, "%s", r->has_weft && r->has_vs ? "even" : "");
        return buf;
    }
    fmt_num(f, sizeof f, win_factor(r));
    snprintf(buf, len, "%s %sx %s", w ? weft_name(r) : vs_name(r), f, better_word(r->better));
    return buf;
}

enum { NOTES_MAX = 16 };
static char notes[NOTES_MAX][200];
static int nnotes;

void add_note(const char *fmt, ...)
{
    if (nnotes == NOTES_MAX)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(notes[nnotes++], sizeof notes[0], fmt, ap);
    va_end(ap);
}

/* ---- the table ------------------------------------------------------------ */

enum { W_GROUP = 8, W_MEASURE = 40, W_UNIT = 8, W_FIG = 9 };

static void print_line(const row *r, int *noisy)
{
    char w[32] = "", p[32] = "", v[96];
    if (r->has_weft)
        fmt_num(w, sizeof w, r->weft.med);
    if (r->has_vs)
        fmt_num(p, sizeof p, r->vs.med);
    row_verdict(r, v, sizeof v);
    int ov = overlapping(r);
    *noisy |= ov;
    printf("%-*s  %-*.*s  %-*s %*s %*s  %s%s\n", W_GROUP, r->group, W_MEASURE, W_MEASURE,
           r->measure, W_UNIT, r->unit, W_FIG, w, W_FIG, p, v, ov ? " ~" : "");
}

/*
 * Two parts: weft against pthreads, then weft against the other references
 * (a hand-written epoll loop, writing memory for the first time, the
 * machine's own stalls), whose names the measure and the verdict give.
 */
void print_table(void)
{
    int noisy = 0, refs = 0;
    printf("\nweft against pthreads: the median of %d run%s of each side; "
           "each ratio is of the two medians on its line\n\n",
           opt.runs, opt.runs == 1 ? "" : "s");
    printf("%-*s  %-*s  %-*s %*s %*s  %s\n", W_GROUP, "workload", W_MEASURE, "measure",
           W_UNIT, "unit", W_FIG, "weft", W_FIG, "pthreads", "ratio");
    for (int i = 0; i < nrows; i++) {
        if (!rows[i].in_table)
            continue;
        if (rows[i].other) {
            refs = 1;
            continue;
        }
        print_line(&rows[i], &noisy);
    }
    if (refs) {
        printf("\n%-*s  %-*s  %-*s %*s %*s  %s\n", W_GROUP, "", W_MEASURE,
               "against other references", W_UNIT, "", W_FIG, "weft", W_FIG, "other", "ratio");
        for (int i = 0; i < nrows; i++)
            if (rows[i].in_table && rows[i].other)
                print_line(&rows[i], &noisy);
    }
    if (noisy)
        printf("\n~ the runs of the two sides overlap (min..max in the CSV): "
               "the winner may change on another run\n");
    for (int i = 0; i < nnotes; i++)
        printf("%s%s\n", i || noisy ? "" : "\n", notes[i]);
}

void print_details(void)
{
    printf("\nWhat each row measures\n");
    for (int i = 0; i < nrows; i++)
        if (rows[i].detail)
            printf("\n%s, %s (%s):\n  %s\n", rows[i].group, rows[i].measure, rows[i].id,
                   rows[i].detail);
}

/* ---- files ---------------------------------------------------------------- */

enum { OUTPUTS_MAX = 32 };
static char outputs[OUTPUTS_MAX][64];
static int noutputs;

FILE *open_out(const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", opt.dir, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "weft-bench: cannot write %s: %s\n", path, strerror(errno));
        exit(1);
    }
    int seen = 0;
    for (int i = 0; i < noutputs; i++)
        seen |= !strcmp(outputs[i], name);
    if (!seen && noutputs < OUTPUTS_MAX)
        snprintf(outputs[noutputs++], sizeof outputs[0], "%s", name);
    return f;
}

void close_out(FILE *f)
{
    if (ferror(f) | fclose(f)) {
        fprintf(stderr, "weft-bench: writing under %s failed\n", opt.dir);
        exit(1);
    }
}

/* A CSV field in quotes, quotes doubled and line breaks made spaces. */
static void csv_text(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s == '\n' ? ' ' : *s, f);
    }
    fputc('"', f);
}

static void csv_figure(FILE *f, int has, figure x)
{
    if (has)
        fprintf(f, ",%.6g,%.6g,%.6g", x.med, x.min, x.max);
    else
        fprintf(f, ",,,");
}

void write_results_csv(void)
{
    FILE *f = open_out("results.csv");
    fprintf(f, "workload,id,measure,unit,better,weft_label,weft_median,weft_min,weft_max,"
               "other_label,other_median,other_min,other_max,ratio_of_medians,"
               "median_of_per_run_ratios,runs,detail\n");
    for (int i = 0; i < nrows; i++) {
        row *r = &rows[i];
        fprintf(f, "%s,%s,", r->group, r->id);
        csv_text(f, r->measure);
        fprintf(f, ",%s,%s,", r->unit, r->better == MORE ? "higher" : "lower");
        csv_text(f, weft_name(r));
        csv_figure(f, r->has_weft, r->weft);
        fputc(',', f);
        csv_text(f, r->has_vs ? vs_name(r) : "");
        csv_figure(f, r->has_vs, r->vs);
        if (r->has_weft && r->has_vs && r->vs.med != 0)
            fprintf(f, ",%.4g", r->weft.med / r->vs.med);
        else
            fprintf(f, ",");
        if (r->run_ratio != 0)
            fprintf(f, ",%.4g", r->run_ratio);
        else
            fprintf(f, ",");
        fprintf(f, ",%d,", opt.runs);
        csv_text(f, r->detail);
        fputc('\n', f);
    }
    close_out(f);
}

void print_outputs(void)
{
    char dir[PATH_MAX];
    if (!realpath(opt.dir, dir))
        snprintf(dir, sizeof dir, "%s", opt.dir);
    printf("\n");
    for (int kind = 0; kind < 2; kind++) {
        const char *ext = kind ? ".svg" : ".csv";
        int any = 0;
        for (int i = 0; i < noutputs; i++) {
            size_t n = strlen(outputs[i]);
            if (n < 4 || strcmp(outputs[i] + n - 4, ext))
                continue;
            printf("%s%s", any ? " " : kind ? "charts: " : "tables: ", outputs[i]);
            any = 1;
        }
        if (any)
            printf("\n");
    }
    int overview = 0;
    for (int i = 0; i < noutputs; i++)
        overview |= !strcmp(outputs[i], "overview.svg");
    printf("All of them are in %s%s\n", dir, overview ? " (start with overview.svg)" : "");
}

/* ---- SVG ------------------------------------------------------------------ */

static const char *const palette[] = {
    [COLOR_WEFT] = "#1f77b4", [COLOR_PTHREADS] = "#d62728", [COLOR_REF] = "#7f7f7f",
    [COLOR_GO] = "#17becf", [COLOR_ALT] = "#ff7f0e", [COLOR_IDEAL] = "#bbbbbb",
};

/* Text for an SVG text node: &, < and > escaped. */
static void svg_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '&')
            fputs("&amp;", f);
        else if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else if (*s == '\n')
            fputc(' ', f);
        else
            fputc(*s, f);
    }
}

static FILE *svg_open(const char *file, int w, int h, const char *title)
{
    FILE *f = open_out(file);
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n"
               "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
               "<text x=\"%d\" y=\"22\" text-anchor=\"middle\" font-size=\"15\" "
               "font-weight=\"bold\">",
            w, h, w, h, w / 2);
    svg_text(f, title);
    fprintf(f, "</text>\n");
    return f;
}

static void svg_close(FILE *f)
{
    fprintf(f, "</svg>\n");
    close_out(f);
}

enum { BAR_W = 760, BAR_LABEL = 200, BAR_AREA = 420, BAR_H = 18, BAR_GAP = 6,
       PANEL_HEAD = 24, PANEL_GAP = 14, CHART_TOP = 40 };

static int panel_height(const panel *p)
{
    return PANEL_HEAD + p->n * (BAR_H + BAR_GAP) + PANEL_GAP;
}

static void draw_panel(FILE *f, const panel *p, int y)
{
    double top = 0;
    for (int i = 0; i < p->n; i++) {
        double m = p->bars[i].fig.max > p->bars[i].fig.med ? p->bars[i].fig.max : p->bars[i].fig.med;
        if (m > top)
            top = m;
    }
    if (top <= 0)
        top = 1;
    fprintf(f, "<text x=\"10\" y=\"%d\" font-weight=\"bold\">", y + 15);
    svg_text(f, p->title);
    fprintf(f, " (%s, %s is better)</text>\n", p->unit, p->higher ? "higher" : "lower");
    y += PANEL_HEAD;
    for (int i = 0; i < p->n; i++, y += BAR_H + BAR_GAP) {
        const bar *b = &p->bars[i];
        int w = (int)(BAR_AREA * b->fig.med / top + 0.5);
        int lo = BAR_LABEL + (int)(BAR_AREA * b->fig.min / top + 0.5);
        int hi = BAR_LABEL + (int)(BAR_AREA * b->fig.max / top + 0.5);
        char v[32];
        fmt_num(v, sizeof v, b->fig.med);
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">", BAR_LABEL - 8, y + 13);
        svg_text(f, b->label);
        fprintf(f, "</text>\n<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\"/>\n",
                BAR_LABEL, y, w < 1 ? 1 : w, BAR_H, palette[b->color]);
        if (hi > lo)
            fprintf(f, "<path d=\"M%d %dH%dM%d %dV%dM%d %dV%d\" stroke=\"black\"/>\n",
                    lo, y + BAR_H / 2, hi, lo, y + 4, y + BAR_H - 4, hi, y + 4, y + BAR_H - 4);
        fprintf(f, "<text x=\"%d\" y=\"%d\">%s</text>\n",
                (hi > BAR_LABEL + w ? hi : BAR_LABEL + w) + 6, y + 13, v);
    }
}

void chart_panels(const char *file, const char *title, const panel *p, int n)
{
    int h = CHART_TOP + 20;
    for (int i = 0; i < n; i++)
        h += panel_height(&p[i]);
    FILE *f = svg_open(file, BAR_W, h, title);
    fprintf(f, "<text x=\"%d\" y=\"40\" text-anchor=\"middle\" fill=\"#555555\">"
               "median of %d runs; the whisker spans the runs (min..max)</text>\n",
            BAR_W / 2, opt.runs);
    int y = CHART_TOP + 20;
    for (int i = 0; i < n; i++) {
        draw_panel(f, &p[i], y);
        y += panel_height(&p[i]);
    }
    svg_close(f);
}

static int side_color(const char *name)
{
    if (!name || !strcmp(name, "pthreads"))
        return COLOR_PTHREADS;
    if (!strncmp(name, "Go", 2))
        return COLOR_GO;
    return COLOR_REF;
}

void chart_group(const char *file, const char *title, const char *group)
{
    panel p[ROWS_MAX];
    int n = 0;
    for (int i = 0; i < nrows; i++) {
        row *r = &rows[i];
        if (strcmp(r->group, group))
            continue;
        panel *q = &p[n++];
        *q = (panel){ .unit = r->unit, .higher = r->better == MORE };
        snprintf(q->title, sizeof q->title, "%s", r->measure);
        if (r->has_weft)
            q->bars[q->n++] = (bar){ weft_name(r), r->weft, COLOR_WEFT };
        if (r->has_vs)
            q->bars[q->n++] = (bar){ vs_name(r), r->vs, side_color(r->other) };
    }
    if (n)
        chart_panels(file, title, p, n);
}

/*
 * The overview: a bar per row of the table, as long as the log of the
 * winner's factor; to the right when weft's median is the better one, to the
 * left when the other's is.
 */
void chart_overview(const char *file)
{
    enum { W = 920, LABEL = 330, MID = LABEL + 250, HALF = 230, ROW = 20 };
    int n = 0;
    double top = 10;
    for (int i = 0; i < nrows; i++)
        if (rows[i].in_table && weft_wins(&rows[i]) >= 0) {
            n++;
            if (win_factor(&rows[i]) > top)
                top = win_factor(&rows[i]);
        }
    if (!n)
        return;
    double decades = ceil(log10(top));
    int h = CHART_TOP + 50 + n * ROW + 30;
    FILE *f = svg_open(file, W, h, "weft against pthreads and other references");
    fprintf(f, "<text x=\"%d\" y=\"40\" text-anchor=\"middle\" fill=\"#555555\">"
               "by how much the better median wins, log scale: a bar to the right, weft; "
               "to the left, the other side</text>\n", W / 2);
    int y0 = CHART_TOP + 40;
    for (int d = 0; d <= (int)decades; d++) {
        int dx = (int)(HALF * d / decades);
        char t[32];
        grouped(t, sizeof t, (long)(pow(10, d) + 0.5));
        for (int s = -1; s <= 1; s += 2) {
            if (d == 0 && s < 0)
                continue;
            fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#dddddd\"/>"
                       "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" fill=\"#555555\">%sx</text>\n",
                    MID + s * dx, y0 - 5, MID + s * dx, y0 + n * ROW, MID + s * dx, y0 - 8, t);
        }
    }
    int y = y0;
    for (int i = 0; i < nrows; i++) {
        row *r = &rows[i];
        int w = r->in_table ? weft_wins(r) : -1;
        if (w < 0)
            continue;
        double fct = win_factor(r);
        int len = (int)(HALF * log10(fct) / decades + 0.5);
        char label[160], v[96];
        snprintf(label, sizeof label, "%s: %s", r->group, r->measure);
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">", LABEL - 8, y + 14);
        svg_text(f, label);
        fprintf(f, "</text>\n<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\"/>\n",
                w ? MID : MID - (len < 1 ? 1 : len), y + 3, len < 1 ? 1 : len, ROW - 6,
                palette[w ? COLOR_WEFT : side_color(r->other)]);
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\">", w ? MID + len + 4 : MID + 4,
                y + 14);
        svg_text(f, row_verdict(r, v, sizeof v));
        fprintf(f, "</text>\n");
        y += ROW;
    }
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n",
            MID, y0 - 5, MID, y0 + n * ROW);
    svg_close(f);
}

/* The top of an axis: the least of 1, 2, 2.5, 5 times a power of ten that is
 * at least v, so that its quarters are round numbers. */
static double nice_top(double v)
{
    static const double steps[] = { 1, 2, 2.5, 5, 10 };
    if (v <= 0)
        return 1;
    double p = pow(10, floor(log10(v)));
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        if (steps[i] * p >= v)
            return steps[i] * p;
    return 10 * p;
}

enum { LINE_W = 440, LINE_H = 300, LINE_L = 60, LINE_R = 130, LINE_T = 50, LINE_B = 45 };

static void draw_lines(FILE *f, const lines *l, int ox, int oy)
{
    const int pw = LINE_W - LINE_L - LINE_R, ph = LINE_H - LINE_T - LINE_B;
    double top = 0;
    for (int s = 0; s < l->nseries; s++)
        for (int i = 0; i < l->n; i++)
            if (l->y[s][i] > top)
                top = l->y[s][i];
    top = nice_top(top);
    int x0 = ox + LINE_L, y0 = oy + LINE_T;
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" font-weight=\"bold\">",
            ox + LINE_W / 2, oy + 30);
    svg_text(f, l->title);
    fprintf(f, "</text>\n<path d=\"M%d %dV%dH%d\" fill=\"none\" stroke=\"black\"/>\n",
            x0, y0, y0 + ph, x0 + pw);
    for (int k = 0; k <= 4; k++) {
        int y = y0 + ph - ph * k / 4;
        char v[32];
        fmt_num(v, sizeof v, top * k / 4);
        fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#eeeeee\"/>"
                   "<text x=\"%d\" y=\"%d\" text-anchor=\"end\" font-size=\"11\">%s</text>\n",
                x0 + 1, y, x0 + pw, y, x0 - 4, y + 4, v);
    }
    for (int i = 0; i < l->n; i++) {
        int x = x0 + (l->n == 1 ? pw / 2 : pw * i / (l->n - 1));
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%d</text>\n",
                x, y0 + ph + 16, l->x[i]);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">workers (threads)</text>\n"
               "<text transform=\"translate(%d,%d) rotate(-90)\" text-anchor=\"middle\">",
            x0 + pw / 2, oy + LINE_H - 8, ox + 14, y0 + ph / 2);
    svg_text(f, l->ylabel);
    fprintf(f, "</text>\n");
    for (int s = 0; s < l->nseries; s++) {
        const char *c = palette[l->color[s]];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", c,
                l->dashed[s] ? " stroke-dasharray=\"4 3\"" : "");
        for (int i = 0; i < l->n; i++)
            if (l->y[s][i] > 0)
                fprintf(f, "%d,%d ", x0 + (l->n == 1 ? pw / 2 : pw * i / (l->n - 1)),
                        y0 + ph - (int)(ph * l->y[s][i] / top));
        fprintf(f, "\"/>\n");
        for (int i = 0; i < l->n; i++)
            if (l->y[s][i] > 0)
                fprintf(f, "<circle cx=\"%d\" cy=\"%d\" r=\"3\" fill=\"%s\"/>\n",
                        x0 + (l->n == 1 ? pw / 2 : pw * i / (l->n - 1)),
                        y0 + ph - (int)(ph * l->y[s][i] / top), c);
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"3\" fill=\"%s\"/>"
                   "<text x=\"%d\" y=\"%d\" font-size=\"11\">",
                x0 + pw + 10, y0 + 8 + 18 * s, c, x0 + pw + 26, y0 + 13 + 18 * s);
        svg_text(f, l->label[s]);
        fprintf(f, "</text>\n");
    }
}

void chart_lines(const char *file, const char *title, const lines *l, int n)
{
    int cols = n > 1 ? 2 : 1, nrow = (n + cols - 1) / cols;
    FILE *f = svg_open(file, cols * LINE_W, CHART_TOP + nrow * LINE_H, title);
    fprintf(f, "<text x=\"%d\" y=\"40\" text-anchor=\"middle\" fill=\"#555555\">"
               "median of %d runs at each point</text>\n", cols * LINE_W / 2, opt.runs);
    for (int i = 0; i < n; i++)
        draw_lines(f, &l[i], (i % cols) * LINE_W, CHART_TOP + (i / cols) * LINE_H);
    svg_close(f);
}

/* ---- progress ------------------------------------------------------------- */

static struct {
    int         tty;            /* -1 until first asked */
    int         index, count;   /* the step, of how many */
    const char *name;
    int         run, runs;
    uint64_t    started;        /* when the step began */
    uint64_t    drawn;          /* when the line was last drawn */
    char        note[120];
} prog = { .tty = -1 };

static int prog_tty(void)
{
    if (prog.tty < 0)
        prog.tty = isatty(2);
    return prog.tty;
}

/* The line, cut to the terminal's width so that it never wraps: a wrapped
 * line could not be rewritten in place. */
static void prog_draw(void)
{
    char run[32] = "", line[256];
    struct winsize ws;
    int cols = ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 ? ws.ws_col : 80;
    if (prog.runs)
        snprintf(run, sizeof run, ", run %d of %d", prog.run, prog.runs);
    int n = snprintf(line, sizeof line, "  [%d/%d] %s%s%s%s  %.1f s", prog.index, prog.count,
                     prog.name, run, prog.note[0] ? ": " : "", prog.note,
                     (double)(now_ns() - prog.started) / 1e9);
    if (n >= cols && cols - 1 < (int)sizeof line)
        line[cols - 1] = '\0';
    fprintf(stderr, "\r\033[K%s", line);
    prog.drawn = now_ns();
}

void progress_step(int index, int count, const char *name, const char *summary)
{
    prog.index = index;
    prog.count = count;
    prog.name = name;
    prog.run = prog.runs = 0;
    prog.note[0] = '\0';
    prog.started = now_ns();
    if (prog_tty())
        prog_draw();
    else
        fprintf(stderr, "  [%d/%d] %s: %s\n", index, count, name, summary);
}

void progress_run(int run, int runs)
{
    prog.run = run;
    prog.runs = runs;
    prog.note[0] = '\0';
    if (prog_tty())
        prog_draw();
}

/* Sets the note and draws the line; throttled: only if the line is a tenth
 * of a second old. */
static void prog_vnote(int throttled, const char *fmt, va_list ap)
{
    if (!prog_tty() || (throttled && now_ns() - prog.drawn < 100000000u))
        return;
    vsnprintf(prog.note, sizeof prog.note, fmt, ap);
    prog_draw();
}

void progress_note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    prog_vnote(0, fmt, ap);
    va_end(ap);
}

void progress_tick(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    prog_vnote(1, fmt, ap);
    va_end(ap);
}

void progress_clear(void)
{
    if (prog_tty())
        fprintf(stderr, "\r\033[K");
}
