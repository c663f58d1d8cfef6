/**
 * What the commands share. BaseCommand: with --json, an error exits with the code the error
 * carries (oclif's JSON path exits 1 for every error, usage errors included, while its JSON
 * says 2). ColorCommand, for commands that print for people: `--[no-]color`, and the chalk it
 * chooses (colour on a terminal, off when piped, with NO_COLOR or under --json; color.ts).
 */
import { Command, Flags, type Interfaces } from '@oclif/core';
import type { ChalkInstance } from 'chalk';
import { makeChalk, plain } from './color.js';

export abstract class BaseCommand extends Command {
  protected override async catch(err: Interfaces.CommandError): Promise<unknown> {
    const carried = (err as { oclif?: { exit?: unknown } }).oclif?.exit;
    if (process.exitCode === undefined && err.exitCode === undefined && typeof carried === 'number') process.exitCode = carried;
    return super.catch(err);
  }
}

export abstract class ColorCommand extends BaseCommand {
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
