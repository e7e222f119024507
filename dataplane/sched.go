package dataplane

// NormalNice is the nice value of a DP loop that is not real-time: the
// highest CFS weight, so a stray normal task that lands on the DP core gets
// about 1% of it instead of half. A SCHED_OTHER DP loop runs this way,
// busy-polling like an operator's data plane does: never stopped by RT
// throttling, which limits only real-time threads.
const NormalNice = -20
