/*
 * Which call fails, in a fault sweep (tests/test_sweep*.c): the sweep
 * counts the calls of the kind it targets, and call fail_at (counted from
 * 0) fails, or, with from_k_on, that one and every one after it. fired says
 * whether the case reached it (when it did not, the sweep of that kind is
 * over).
 */
#ifndef OSMEM_TESTS_SWEEP_FAULT_H
#define OSMEM_TESTS_SWEEP_FAULT_H

#include <stdbool.h>

static struct {
  long fail_at;
  bool from_k_on;
  bool on; /* counting; off between cases and once the script is over */
  bool fired;
  long seen;
} fault;

/* Starts counting for a case: call k fails, once or from then on. */
static void fault_arm(long k, bool from_k_on) {
  fault.fail_at = k, fault.from_k_on = from_k_on;
  fault.seen = 0, fault.fired = false, fault.on = true;
}

/* Counts one call of the targeted kind; true when this one fails. */
static bool fault_due(void) {
  if (!fault.on) return false;
  long k = fault.seen++;
  if (k == fault.fail_at || (fault.from_k_on && k > fault.fail_at)) {
    fault.fired = true;
    return true;
  }
  return false;
}

#endif /* OSMEM_TESTS_SWEEP_FAULT_H */
