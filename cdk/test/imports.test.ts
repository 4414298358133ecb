import * as fs from 'fs';
import * as path from 'path';

/** The app's own modules (bin/ and lib/) and the relative imports of each, `import type` included. */
function importGraph(): Map<string, string[]> {
  const root = path.join(__dirname, '..');
  const files = ['bin', 'lib'].flatMap((dir) =>
    fs
      .readdirSync(path.join(root, dir))
      .filter((f) => f.endsWith('.ts'))
      .map((f) => path.join(root, dir, f)),
  );
  const graph = new Map<string, string[]>();
  for (const file of files) {
    const source = fs.readFileSync(file, 'utf8');
    const targets = [...source.matchAll(/^\s*(?:import|export)\b[^'"]*?\bfrom\s+['"](\.{1,2}\/[^'"]+)['"]/gm)].map(
      (m) => path.relative(root, path.resolve(path.dirname(file), m[1]) + '.ts'),
    );
    graph.set(path.relative(root, file), targets);
  }
  return graph;
}

/** Every cycle of the graph, each as the path that closes it. */
function cycles(graph: Map<string, string[]>): string[][] {
  const found: string[][] = [];
  const done = new Set<string>();
  const visit = (node: string, trail: string[]) => {
    const at = trail.indexOf(node);
    if (at >= 0) {
      found.push([...trail.slice(at), node]);
      return;
    }
    if (done.has(node)) return;
    for (const next of graph.get(node) ?? []) visit(next, [...trail, node]);
    done.add(node);
  };
  for (const node of graph.keys()) visit(node, []);
  return found;
}

describe('module structure', () => {
  const graph = importGraph();

  test('the import graph is read: app.ts imports the stack and the nag module', () => {
    expect(graph.get(path.join('lib', 'app.ts'))).toEqual(
      expect.arrayContaining([path.join('lib', 'nag.ts'), path.join('lib', 'task-scheduler-stack.ts')]),
    );
  });

  test('no two modules of the app import each other, directly or through others', () => {
    expect(cycles(graph).map((c) => c.join(' -> '))).toEqual([]);
  });
});
