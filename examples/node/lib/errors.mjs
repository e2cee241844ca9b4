// Typed errors, the same classes (and the same hierarchy) as mbert_edge.errors in Python.
// Every message says what went wrong and what to do about it. No Node APIs: the browser page uses this file too.

export class MbertEdgeError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
  }
}
/** A bundle cannot be used as it is. */
export class BundleError extends MbertEdgeError {}
/** The bundle directory, or its manifest, does not exist. */
export class BundleNotFoundError extends BundleError {}
/** The manifest is not valid JSON or does not follow the bundle schema. */
export class BundleFormatError extends BundleError {}
/** The bundle was written by a newer mbert-edge than this one. */
export class UnsupportedFormatVersionError extends BundleFormatError {}
/** A file listed in the manifest is missing, truncated or altered (checksum mismatch). */
export class BundleIntegrityError extends BundleError {}
/** The runtime cannot run any model file of this bundle, or failed to load it. */
export class BackendUnavailableError extends MbertEdgeError {}
/** A method was called that the bundle's task does not support (e.g. embed() on a classifier). */
export class WrongTaskError extends MbertEdgeError {}
/** The texts passed in are not a string or an array of non-empty strings. */
export class InvalidInputError extends MbertEdgeError {}
/** A text is longer than the model's max sequence length and truncation was turned off. */
export class TextTooLongError extends InvalidInputError {}
