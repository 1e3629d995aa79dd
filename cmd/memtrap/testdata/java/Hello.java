public class Hello {
    public static void main(String[] args) throws Exception {
        long sum = 0;
        java.util.List<Thread> ts = new java.util.ArrayList<>();
        final long[] parts = new long[4];
        for (int t = 0; t < 4; t++) {
            final int id = t;
            Thread th = new Thread(() -> { long s = 0; for (int i = 0; i < 2_000_000; i++) { s += i % 7; } parts[id] = s; });
            ts.add(th); th.start();
        }
        for (Thread th : ts) th.join();
        for (long p : parts) sum += p;
        Object o = null;
        int npe = 0;
        for (int i = 0; i < 1000; i++) { try { o.hashCode(); } catch (NullPointerException e) { npe++; } }
        System.out.println("sum " + sum + " npe " + npe);
        System.exit(7);
    }
}
