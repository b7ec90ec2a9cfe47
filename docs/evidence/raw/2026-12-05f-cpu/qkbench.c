#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "backend/cpu/kernels.h"
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
int main(void){
  kiln_attn_kernels ak; kiln_cpu_attn_lookup(KILN_ISA_AVX512,&ak);
  int hd=64,G=3; static float k[4096*64], q[3*64], s[3*4096], o[3*64], p[3*4096];
  for(int i=0;i<4096*64;i++)k[i]=(i%7)*0.01f; for(int i=0;i<3*64;i++)q[i]=0.1f;
  for(int i=0;i<3*4096;i++)p[i]=0.001f;
  int runs[]={16,64,256};
  for(int ri=0;ri<3;ri++){int nk=runs[ri]; long reps=(1L<<26)/(nk*G*hd);
    double t0=now(); for(long r=0;r<reps;r++) for(int j=0;j<4096;j+=nk) ak.qk(k+(size_t)(j%1024)*hd,nk,q,G,hd,s+(j%1024),4096);
    double t1=now(); double fl=2.0*reps*4096*G*hd;
    double t2=now(); for(long r=0;r<reps;r++) for(int j=0;j<4096;j+=nk) ak.pvg(o,hd,p+(j%1024),4096,G,k+(size_t)(j%1024)*hd,nk,hd);
    double t3=now();
    printf("run %4d: qk %.1f GFLOP/s  pvg %.1f GFLOP/s (1 thread, L1/L2)\n",nk,fl/(t1-t0)/1e9,fl/(t3-t2)/1e9);}
  return (int)s[5]+(int)o[3];
}
