# ns/lookup vs extents mapped, one line per implementation (viommu-bench writes the data).
# usage: gnuplot -e "datafile='D'; outfile='O.png'; subtitle='S'" bench/plot.gp
# data: one block per implementation, its first line the name, then "extents median p10 p90".
if (!exists("subtitle")) subtitle = ''
set terminal pngcairo size 960,600 noenhanced font ',10'
set output outfile
set title "random lookups over 4 KiB extents (median, p10-p90)\n".subtitle
set logscale x 2
set logscale y 10
set xtics ('1K' 1024, '4K' 4096, '16K' 16384, '64K' 65536, '256K' 262144, '1M' 1048576)
set format y '%g'
set xlabel 'extents mapped in the domain'
set ylabel 'ns / lookup'
set key top left
set grid
plot for [i=0:3] datafile index i using 1:2:3:4 with yerrorlines lw 2 pt 7 title columnheader(1)
