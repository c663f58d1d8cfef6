/**
 * What the commands that print for people share: `--[no-]color`, and the chalk it chooses
 * (colour on a terminal, off when piped, with NO_COLOR or under --json; src/trace/color.ts).
 */
import { Command, Flags } from '@oclif/core';
import type { ChalkInstance } from 'chalk';
import { makeChalk, plain } from './color.js';

export abstract class BaseCommand extends Command {
  static override baseFlags = {
    color: Flags.boolean({
      allowNo: true, helpGroup: 'GLOBAL',
      summary: 'force colour on or off (default: on for terminals, off with NO_COLOR or when piped)',
    }),
  };

  /** The chalk for stdout under flag `color` (colourless whenever --json is on). */
  protected chalkFor(color: boolean | undefined, json: boolean): ChalkInstance {
    return json ? plain : makeChalk(color, process.stdout);
  }
}
