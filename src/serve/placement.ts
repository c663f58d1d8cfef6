/**
 * Where serve's threads run (serve --cpus): workers pinned one CPU each, and every other
 * thread (the main thread with its event loop, libuv's pool, V8's helpers) kept off those
 * CPUs, so a spinning worker never waits behind the thread that answers its IOTLB messages
 * and never takes its CPU from it.
 */
import { cpus as hostCpus } from 'node:os';
import { readdirSync, readFileSync } from 'node:fs';
import { setThreadAffinity } from '../sys/index.js';

/** "2-3,5" -> [2, 3, 5]; throws naming what is wrong (as `flag`'s value). CPUs must exist on this machine. */
export function parseCpuList(text: string, cpuCount = hostCpus().length, flag = '--cpus'): number[] {
  const out: number[] = [];
  for (const part of text.split(',')) {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(part);
    if (!m) throw new Error(`${flag}: "${part}" is not a CPU number or range (e.g. 2-3,5)`);
    const first = Number(m[1]);
    const last = m[2] === undefined ? first : Number(m[2]);
    if (last < first) throw new Error(`${flag}: range ${part} runs backwards`);
    for (let cpu = first; cpu <= last; cpu++) {
      if (cpu >= cpuCount) throw new Error(`${flag}: CPU ${cpu} does not exist (this machine has ${cpuCount})`);
      if (!out.includes(cpu)) out.push(cpu);
    }
  }
  return out;
}

/** The CPUs this process may run on (its affinity, e.g. under taskset or a cpuset). */
export function allowedCpus(): number[] {
  const m = /Cpus_allowed_list:\s*(\S+)/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? parseCpuList(m[1]!, Number.MAX_SAFE_INTEGER) : [...hostCpus().keys()];
}

/**
 * Moves every thread of this process onto the CPUs it may use that are not in `workerCpus`
 * (threads created later, the workers included, inherit that; workers then pin themselves).
 * Returns the CPUs the other threads got, or null when the workers' CPUs are all there is
 * (nothing moved).
 */
export function keepOffWorkerCpus(workerCpus: readonly number[], allowed: readonly number[] = allowedCpus()): number[] | null {
  const rest = allowed.filter((cpu) => !workerCpus.includes(cpu));
  if (rest.length === 0) return null;
  for (const tid of readdirSync('/proc/self/task')) setThreadAffinity(Number(tid), rest);
  return rest;
}
