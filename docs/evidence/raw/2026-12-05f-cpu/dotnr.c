#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "backend/cpu/kernels.h"
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
int main(void){
  kiln_dot_fn f = kiln_cpu_dot_lookup_quant(KILN_DT_Q4_1, KILN_ISA_AVX512);
  int n=576, rows=1536; size_t rb=n/32*20;
  unsigned char *w=malloc(rb*rows); for(size_t i=0;i<rb*rows;i++) w[i]=(unsigned char)(i*131+7);
  for(int r=0;r<rows;r++) for(int b=0;b<n/32;b++){ unsigned char*p=w+r*rb+b*20; p[0]=0;p[1]=0x30;p[2]=0;p[3]=0x2c; }
  float *x=malloc(16*n*4), *y=malloc(16*rows*4); for(int i=0;i<16*n;i++)x[i]=0.01f*(i%13);
  int nrs[]={4,6,8,12,16};
  for(int k=0;k<5;k++){int NR=nrs[k]; double best=1e9;
   for(int t=0;t<5;t++){double t0=now(); for(int it=0;it<100;it++){
     int mx=kiln_cpu_dot_max_rows(KILN_DT_Q4_1,KILN_ISA_AVX512);
     for(int o=0;o<rows;o++) for(int g=0;g<NR;g+=mx){int nr=NR-g<mx?NR-g:mx;
       f(w+(size_t)o*rb, x+(size_t)g*n, n, nr, n, y+(size_t)g*rows+o, rows);
     }} double dt=(now()-t0)/100; if(dt<best)best=dt;}
   printf("nr %2d: %.1f us per 576x1536 (%.2f us/row)\n",NR,best*1e6,best*1e6/NR);}
  return (int)y[5]&0;
}
