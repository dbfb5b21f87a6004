/*
 * The pieces of physical memory on Windows (backend.h,
 * osmem__os_memory_info): installed RAM (GlobalMemoryStatusEx) and the
 * memory limits of the job object the process runs in, if any
 * (QueryInformationJobObject on the process's own job, JOB_OBJECT_LIMIT_
 * PROCESS_MEMORY and JOB_OBJECT_LIMIT_JOB_MEMORY, the lower). Job limits
 * cap committed memory, which is what the pool's reservations are
 * (reserve.c). There are no cgroups and no rlimits.
 */
#include <config.h>

#include <errno.h>

#include "machine.h"
#include "osmem.h"
#include "sys.h"

uint64_t osmem__windows_ram(void) {
  MEMORYSTATUSEX ms = {.dwLength = sizeof ms};
  if (!osmem__windows_sys.GlobalMemoryStatusEx(&ms)) return 0;
  return ms.ullTotalPhys;
}

static uint64_t lower(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* A process in no job gets a zeroed answer (no limit flags), as does a
 * system that cannot say. */
uint64_t osmem__windows_job_limit(void) {
  JOBOBJECT_EXTENDED_LIMIT_INFORMATION info = {0};
  DWORD got = 0;
  if (!osmem__windows_sys.QueryInformationJobObject(
          NULL, JobObjectExtendedLimitInformation, &info, sizeof info, &got))
    return OSMEM_UNLIMITED;
  DWORD flags = info.BasicLimitInformation.LimitFlags;
  uint64_t limit = OSMEM_UNLIMITED;
  if ((flags & JOB_OBJECT_LIMIT_PROCESS_MEMORY) && info.ProcessMemoryLimit)
    limit = lower(limit, info.ProcessMemoryLimit);
  if ((flags & JOB_OBJECT_LIMIT_JOB_MEMORY) && info.JobMemoryLimit)
    limit = lower(limit, info.JobMemoryLimit);
  return limit;
}

uint64_t osmem__os_ram(void) {
  DWORD saved = GetLastError();
  uint64_t ram = osmem__windows_ram();
  SetLastError(saved);
  return ram;
}

void osmem__os_memory_info(struct osmem_memory_info *out) {
  int saved_errno = errno;
  DWORD saved = GetLastError();
  out->ram = osmem__windows_ram();
  out->job_max = osmem__windows_job_limit();
  SetLastError(saved);
  errno = saved_errno;
}
