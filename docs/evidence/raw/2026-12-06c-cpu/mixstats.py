import sys
for f in sys.argv[1:]:
    rows=[]; 
    for l in open(f):
        if "debug: step:" in l:
            w=l.split(); rows.append((int(w[3]), int(w[6]), float(w[9]), float(w[12])))
    m=[r for r in rows if r[1]>0 and r[0]>0]
    if m:
        pr=sum(r[0] for r in m); ms=sum(r[3] for r in m)
        print("%s: %d mixed steps, %.1f prefill rows/step, %.1f ms/step, %.2f ms/prefill row, %.0f tok/s of prompt in mixed steps" % (f, len(m), pr/len(m), ms/len(m), ms/pr, 1000*pr/ms))
