/**
 * The one shape of this project's errors: a stable string `code` (each area keeps its codes in an
 * `as const` table), `name` set to the class's own name, and `cause` passed through `options`.
 */
export class CodedError<C extends string = string> extends Error {
  readonly code: C;
  constructor(code: C, message: string, options?: ErrorOptions) {
    super(message, options);
    // The concrete class, so subclasses need not repeat it.
    this.name = new.target.name;
    this.code = code;
  }
}

/** The union of an `as const` code table's values. */
export type CodeOf<T extends Record<string, string>> = T[keyof T];
