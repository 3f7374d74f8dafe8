import sys, re, collections
# Sections in a fixed order per "== order" block: t1, t4, b8, b8r, mla.
names = ["1 seq, 1 token", "1 seq, 4 tokens", "B=8", "B=8 ragged", "MLA 192/128"]
d = collections.defaultdict(list)
block = -1; sec = -1
for line in open(sys.argv[1]):
    if line.startswith("== "): sec = -1; continue
    if line.strip().startswith("cache"): sec += 1; continue
    f = line.split()
    if len(f) > 12 and f[0].isdigit():
        d[(sec, int(f[0]), f[4])].append((float(f[9]), float(f[8])))
keys = sorted({(s, c) for s, c, _ in d})
for s, c in keys:
    l = d[(s, c, "local")]; b = d[(s, c, "built_in")]
    fmt = lambda v: "/".join("%.3f" % x[0] for x in v)
    hfmt = lambda v: "/".join("%.3f" % x[1] for x in v)
    ratio = (sum(x[0] for x in b) / len(b)) / (sum(x[0] for x in l) / len(l))
    print(f"{names[s]:16s} {c:8d}  cudnn {fmt(l):12s} builtin {fmt(b):12s} ratio {ratio:.3f}  host {hfmt(l)} / {hfmt(b)}")
