/**
 * Buffered line output for commands that can print millions of lines (`trace decode`).
 * stdout writes to files, pipes and terminals are synchronous on Linux, so batching lines
 * into large writes is all that is needed. A closed pipe (`| head`) ends the process quietly.
 */
export class LineOutput {
  private parts: string[] = [];
  private size = 0;

  constructor(
    private readonly stream: NodeJS.WriteStream = process.stdout,
    private readonly limit = 64 * 1024,
  ) {
    if (!LineOutput.epipeHandled.has(stream)) {
      LineOutput.epipeHandled.add(stream);
      stream.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'EPIPE') process.exit(0);
        throw err;
      });
    }
  }

  private static readonly epipeHandled = new WeakSet<object>();

  readonly line = (text: string): void => {
    this.parts.push(text, '\n');
    this.size += text.length + 1;
    if (this.size >= this.limit) this.flush();
  };

  flush(): void {
    if (this.size === 0) return;
    this.stream.write(this.parts.join(''));
    this.parts = [];
    this.size = 0;
  }
}
