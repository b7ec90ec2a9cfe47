import sys
def solve(A, y):
    # normal equations, 3x3
    n=len(A[0]); M=[[sum(A[k][i]*A[k][j] for k in range(len(A))) for j in range(n)] for i in range(n)]
    v=[sum(A[k][i]*y[k] for k in range(len(A))) for i in range(n)]
    for i in range(n):
        p=max(range(i,n), key=lambda r: abs(M[r][i])); M[i],M[p]=M[p],M[i]; v[i],v[p]=v[p],v[i]
        for r in range(n):
            if r!=i:
                f=M[r][i]/M[i][i]; M[r]=[M[r][c]-f*M[i][c] for c in range(n)]; v[r]-=f*v[i]
    return [v[i]/M[i][i] for i in range(n)]
for f in sys.argv[1:]:
    m=[]
    for l in open(f):
        if "debug: step:" in l:
            w=l.split(); r=(int(w[3]), int(w[6]), float(w[9]), float(w[12]))
            if r[1]>0 and r[0]>0: m.append(r)
    c=solve([[1,r[0],r[2]] for r in m],[r[3] for r in m])
    res=sorted(abs(r[3]-(c[0]+c[1]*r[0]+c[2]*r[2])) for r in m)
    print("%s: ms = %.1f + %.2f/row + %.3f/kkey; at 22 rows, 50 k keys: %.1f ms (median |resid| %.1f)" % (f.split('/')[-1], c[0], c[1], c[2], c[0]+22*c[1]+50*c[2], res[len(res)//2]))
