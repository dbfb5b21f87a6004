# Charts for bench/bench-peers (run by it after the measurements):
#   gnuplot -e "datadir='DIR'; outdir='DIR'" bench/plot.gp
# datadir holds the peers-*.dat files bench-peers wrote: one row per
# workload, then for each contender its median, min and max (NaN = n/a).
if (!exists("datadir")) datadir = "."
if (!exists("outdir")) outdir = "."

if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
  set terminal pngcairo size 1000,560 noenhanced font ",10"
} else {
  set terminal png size 1000,560 noenhanced
}
set datafile missing "NaN"
set grid ytics
set key top left
set border 3
set tics nomirror

# ---- pooled, fresh, free and batch latencies per contender
set output outdir."/latency.png"
set title "Megablock latency per operation (median of 7 processes, error bars min..max; log scale)"
set ylabel "ns per operation"
set logscale y
set yrange [*:*]
set style data histograms
set style histogram errorbars gap 2 lw 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set xtics rotate by -15 scale 0
set key outside right top vertical
f = datadir."/peers-latency.dat"
plot for [i=0:4] f using (column(2+3*i)):(column(3+3*i)):(column(4+3*i)):xtic(1) title columnhead(2+3*i)
unset output

# ---- get(n)+free by n
set output outdir."/getn.png"
set title "get(n)+free of n contiguous megablocks (median of 7; error bars min..max)"
set xlabel "n (megablocks)"
set ylabel "ns per get+free pair"
set logscale xy
set xtics norotate scale 1 (2, 8, 64, 512)
set key inside top left vertical Left reverse
set style data yerrorlines
f = datadir."/peers-getn.dat"
plot for [i=0:4] f using 1:(column(2+3*i)):(column(3+3*i)):(column(4+3*i)) title columnhead(2+3*i) lw 2 pt 7+i lc i+1
unset output

# ---- fragmentation
set output outdir."/fragmentation.png"
set title "Fragmented pool: random free (both neighbours free) + get(1) (solid: free+get pair; dashed: the free alone)"
set xlabel "free ranges before the random operations"
set ylabel "ns per operation"
set logscale xy
set xtics (10, 1000, 100000)
set xrange [5:200000]
set key outside right top vertical
f = datadir."/peers-frag-pair.dat"
g = datadir."/peers-frag-free.dat"
plot for [i=0:4] f using 1:(column(2+3*i)):(column(3+3*i)):(column(4+3*i)) title columnhead(2+3*i)." pair" lw 2 pt 7+i lc i+1, \
     for [i=0:4] g using 1:(column(2+3*i)):(column(3+3*i)):(column(4+3*i)) title columnhead(2+3*i)." free" lw 1 dt 2 pt 7+i lc i+1
unset output
set xrange [*:*]

set key inside top left vertical Left reverse
# ---- threads
set output outdir."/threads.png"
set title "Pooled get(1)+free pairs per second, all threads together (median of 7; error bars min..max; log scale)"
unset xlabel
unset logscale x
set logscale y
set ylabel "million pairs per second"
set style data histograms
set style histogram errorbars gap 2 lw 1
set xtics norotate scale 0
set xtics auto
f = datadir."/peers-threads.dat"
plot f using 2:3:4:xtic(1) title columnhead(2), '' using 5:6:7 title columnhead(5)
unset output
