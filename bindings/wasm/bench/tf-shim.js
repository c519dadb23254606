// '@tensorflow/tfjs-core' in the browser pages (an import map points here): the UMD bundle's
// global `tf`, so that js/tfjs.js runs unchanged against the bundle the page loaded.
const tf = globalThis.tf;
export default tf;
export const { Optimizer, backend, dispose, engine, getBackend, ready, serialization, setBackend, tensor, tidy, train } = tf;
